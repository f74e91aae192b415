//! cgroup v2: where the hierarchy is mounted, ids (the inode number of a cgroup's
//! directory, which is what `bpf_get_current_cgroup_id` returns) and child groups.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
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

/// Where hybrid hosts (cgroup v1 at /sys/fs/cgroup) mount cgroup v2, under the v1 root.
pub const HYBRID_UNIFIED: &str = "unified";

/// Whether `dir` is in a cgroup v2 hierarchy, which has `cgroup.controllers` at every
/// level; v1 hierarchies, the tmpfs holding them and plain directories do not.
pub fn is_cgroup2(dir: &Path) -> bool {
    dir.join("cgroup.controllers").is_file()
}

/// The cgroup v2 hierarchy at a cgroup root: the root itself, or, on a hybrid host (v1
/// at the root, as where the DaemonSet mounts the host's /sys/fs/cgroup), its
/// [`HYBRID_UNIFIED`] mount.
pub fn resolve_root(root: &Path) -> Result<PathBuf> {
    if is_cgroup2(root) {
        return Ok(root.into());
    }
    let unified = root.join(HYBRID_UNIFIED);
    if is_cgroup2(&unified) {
        return Ok(unified);
    }
    Err(Error::NotCgroup2 {
        path: root.into(),
        unified,
    })
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

/// Finds the path (relative to `root`, starting with `/`) of the cgroup with `id`.
/// Returns `None` for a cgroup that no longer exists.
pub fn path_of(root: &Path, id: u64) -> Option<PathBuf> {
    paths_of(root, &HashSet::from([id])).paths.remove(&id)
}

/// What one walk of the hierarchy found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// The paths (as [`path_of`]) of the cgroups sought that were found.
    pub paths: HashMap<u64, PathBuf>,
    /// Whether every directory could be read, so a cgroup not found no longer exists;
    /// else it may be in one that could not.
    pub complete: bool,
}

/// Finds the paths of the cgroups with `ids` in one walk of the hierarchy, which ends
/// once all are found. Directory entries carry their inode numbers, so the walk reads
/// directories without a stat per cgroup.
pub fn paths_of(root: &Path, ids: &HashSet<u64>) -> Walk {
    let mut walk = Walk {
        paths: HashMap::new(),
        complete: true,
    };
    match fs::metadata(root) {
        Ok(meta) if ids.contains(&meta.ino()) => {
            walk.paths.insert(meta.ino(), PathBuf::from("/"));
        }
        Ok(_) => {}
        Err(_) => {
            walk.complete = false;
            return walk;
        }
    }
    let mut complete = true;
    let mut stack = vec![root.to_path_buf()];
    while walk.paths.len() < ids.len()
        && let Some(dir) = stack.pop()
    {
        let Some(entries) = read(fs::read_dir(&dir), &mut complete) else {
            continue;
        };
        for entry in entries {
            let Some(entry) = read(entry, &mut complete) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if ids.contains(&entry.ino()) {
                let relative = path
                    .strip_prefix(root)
                    .map(|p| Path::new("/").join(p))
                    .unwrap_or_else(|_| path.clone());
                walk.paths.insert(entry.ino(), relative);
            }
            stack.push(path);
        }
    }
    walk.complete = complete;
    walk
}

/// The value of one read in a walk. A group removed while the walk reads it
/// (NotFound) took its children with it: nothing is missed. Any other error may hide
/// a cgroup, so the walk is not `complete`.
fn read<T>(result: std::io::Result<T>, complete: &mut bool) -> Option<T> {
    result
        .inspect_err(|e| *complete &= e.kind() == std::io::ErrorKind::NotFound)
        .ok()
}

/// Whether the cgroup `id` is still at `path` (relative to `root`, as [`path_of`] gives
/// it): one stat. Ids are never reused, so a group made again at the same path is
/// another cgroup and this one is gone for good. An error other than "not there" tells
/// nothing, and counts as present.
pub fn exists_at(root: &Path, path: &str, id: u64) -> bool {
    match fs::metadata(root.join(path.trim_start_matches('/'))) {
        Ok(meta) => meta.ino() == id,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        ),
    }
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
        tracing::warn!("could not remove cgroup {}", self.path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

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
    fn a_hybrid_root_resolves_to_its_unified_mount() {
        let scratch = Scratch::new("cgroup-hybrid");
        let (v2, hybrid, neither) = (
            scratch.0.join("v2"),
            scratch.0.join("hybrid"),
            scratch.0.join("neither"),
        );
        for dir in [&v2, &hybrid.join(HYBRID_UNIFIED), &neither.join("cpu")] {
            fs::create_dir_all(dir).expect("dir");
        }
        fs::write(v2.join("cgroup.controllers"), "cpu memory\n").expect("controllers");
        fs::write(hybrid.join("unified/cgroup.controllers"), "").expect("controllers");
        assert_eq!(resolve_root(&v2).expect("v2"), v2);
        assert_eq!(
            resolve_root(&hybrid).expect("hybrid"),
            hybrid.join(HYBRID_UNIFIED)
        );
        let err = resolve_root(&neither).expect_err("neither");
        assert!(
            matches!(&err, Error::NotCgroup2 { path, unified } if *path == neither && *unified == neither.join("unified")),
            "{err:?}"
        );
    }

    #[test]
    fn one_walk_finds_many_cgroups_and_stat_tells_them_gone() {
        let scratch = Scratch::new("cgroup-walk");
        let root = &scratch.0;
        for dir in ["a/b", "a/c", "d"] {
            fs::create_dir_all(root.join(dir)).expect("dir");
        }
        fs::write(root.join("a/cgroup.procs"), "").expect("a file");
        let id = |p: &str| id_of(&root.join(p)).expect("id");
        let (root_id, b, d) = (id_of(root).expect("id"), id("a/b"), id("d"));
        let found = paths_of(root, &HashSet::from([root_id, b, d, u64::MAX]));
        assert_eq!(
            found,
            Walk {
                paths: HashMap::from([
                    (root_id, PathBuf::from("/")),
                    (b, PathBuf::from("/a/b")),
                    (d, PathBuf::from("/d")),
                ]),
                complete: true,
            }
        );
        assert!(!paths_of(&root.join("nope"), &HashSet::from([b])).complete);
        assert_eq!(path_of(root, id("a/c")), Some(PathBuf::from("/a/c")));
        assert_eq!(path_of(root, u64::MAX), None);

        assert!(exists_at(root, "/a/b", b));
        // Another directory at the path (a group made again gets a new id).
        assert!(!exists_at(root, "/a/b", d));
        fs::remove_dir(root.join("d")).expect("rmdir");
        assert!(!exists_at(root, "/d", d));
        assert!(
            !exists_at(root, "/a/cgroup.procs/x", d),
            "a file on the way"
        );
    }

    #[test]
    fn none_without_cgroup2() {
        let text = "32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(root_from_mountinfo(text), None);
    }
}
