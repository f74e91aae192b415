//! A scratch directory for unit tests that need real files (a fake host, a fake cgroup
//! tree). Modules add what they need of it in `impl Scratch` blocks of their own tests.
use std::{fs, path::PathBuf};

/// `$TMPDIR/headroom-<tag>-<pid>`, made empty; removed with what is in it on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("headroom-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
