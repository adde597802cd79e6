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
    }
}
