//! Files only dpgate's user may read: the SQLite ledger (budgets and every
//! analyst's statements) and the embedded SQLite copy of CSV data (the
//! private rows themselves).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes sure `path` exists readable and writable by its owner only: a
/// missing file is created with mode 0600 (SQLite then gives its WAL and
/// shared-memory files the same mode); an existing one that others may
/// read or write is left as it is, and the returned warning says so and
/// how to fix it.
pub fn owner_only(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            Ok((mode & 0o077 != 0).then(|| {
                format!(
                    "{} is readable or writable by other users (mode {mode:o}); run chmod 600 on it (and its -wal and -shm files)",
                    path.display()
                )
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            // The process umask can only remove bits; make sure anyway.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Bytes available to dpgate's user on the filesystem that holds `path`
/// (statvfs; a file that does not exist yet is measured at its directory).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let at = if path.exists() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let c_path = std::ffi::CString::new(at.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid,
    // writable statvfs that the call fills in.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_owner_only_and_open_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        assert_eq!(owner_only(&path).unwrap(), None);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = owner_only(&path).unwrap().unwrap();
        assert!(
            warning.contains("mode 644") && warning.contains("chmod 600"),
            "{warning}"
        );
        let free = free_bytes(&path).unwrap();
        assert!(free > 0);
        let later = free_bytes(&dir.path().join("not-yet.sqlite")).unwrap();
        assert_eq!(later >> 30, free >> 30);
    }
}
