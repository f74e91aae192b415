//! cgroup v2: where the hierarchy is mounted, ids (the inode number of a cgroup's
//! directory, which is what `bpf_get_current_cgroup_id` returns) and child groups.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Finds the cgroup v2 mount point: `/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones.
pub fn find_root() -> Result<PathBuf> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    root_from_mountinfo(&text).ok_or(Error::NoCgroup2)
}

/// The first cgroup2 mount in a mountinfo text whose root is the hierarchy's root.
pub fn root_from_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 id of the cgroup at `path`.
pub fn id_of(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|source| Error::OpenCgroup {
            path: path.into(),
            source,
        })
}

/// Finds the path (relative to `root`) of the cgroup with `id`, walking the hierarchy.
/// Returns `None` for a cgroup that no longer exists.
pub fn path_of(root: &Path, id: u64) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        if meta.ino() == id {
            return Some(
                dir.strip_prefix(root)
                    .map(|p| Path::new("/").join(p))
                    .unwrap_or(dir),
            );
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    None
}

/// A child cgroup that is removed when dropped (after its processes have left).
#[derive(Debug)]
pub struct ChildGroup {
    path: PathBuf,
    id: u64,
}

impl ChildGroup {
    /// Creates `root/name`. An existing, empty group of that name (left by a crashed
    /// run) is reused.
    pub fn create(root: &Path, name: &str) -> Result<Self> {
        let path = root.join(name);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(Error::CreateCgroup { path, source }),
        }
        let id = id_of(&path)?;
        Ok(Self { path, id })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The file a process writes its pid to in order to join the group.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        // rmdir fails while processes remain; they are the caller's children and have
        // been waited for, but a zombie can linger for a moment.
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("headroom: could not remove cgroup {}", self.path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_mount() {
        let text = "24 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            root_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn finds_hybrid_mount_after_v1_controllers() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            root_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn skips_cgroup2_bind_mounts_of_a_subtree() {
        let text = "\
40 30 0:27 /kubepods /host/cg rw - cgroup2 cgroup2 rw
41 30 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            root_from_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn unescapes_spaces_in_mount_points() {
        let text = "41 30 0:27 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            root_from_mountinfo(text),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
    }

    #[test]
    fn none_without_cgroup2() {
        let text = "32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(root_from_mountinfo(text), None);
    }
}
