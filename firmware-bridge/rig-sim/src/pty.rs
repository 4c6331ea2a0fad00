//! Owns the pseudo-terminal the firmware speaks over, and the optional symlink to its slave.
//! Knows nothing about frames.

use std::io;
use std::path::{Path, PathBuf};

use tokio_serial::{SerialPort, SerialStream};

use crate::error::SimError;

/// Both ends of the pty.
#[derive(Debug)]
pub struct Pty {
    /// The firmware's end.
    pub master: SerialStream,
    /// Held open for the simulator's lifetime: with no slave open, reads on the master fail
    /// with EIO and the line settings could be lost between edge sessions. Never read.
    pub slave_keepalive: SerialStream,
    /// The slave's path, what the edge opens.
    pub path: PathBuf,
}

/// Creates a raw-mode pty pair (serialport's `TTYPort::pair`, which does the unsafe termios
/// work for us) and learns the slave's `/dev/pts/N` path.
pub fn open() -> Result<Pty, SimError> {
    let (master, slave) = SerialStream::pair().map_err(|e| SimError::Pty(io::Error::from(e)))?;
    let path = slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| SimError::Pty(io::Error::other("the pty slave has no path")))?;
    Ok(Pty {
        master,
        slave_keepalive: slave,
        path,
    })
}

/// A symlink to the pty slave, removed when dropped.
#[derive(Debug)]
pub struct PtyLink {
    link: PathBuf,
    target: PathBuf,
}

impl PtyLink {
    /// Creates `link` → `target`, replacing an existing symlink (a stale one from a killed
    /// run) but never a regular file.
    pub fn create(link: &Path, target: &Path) -> Result<Self, SimError> {
        let err = |source| SimError::PtyLink {
            path: link.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(link) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(link).map_err(err)?,
            Ok(_) => {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a symlink",
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        std::os::unix::fs::symlink(target, link).map_err(err)?;
        Ok(Self {
            link: link.to_owned(),
            target: target.to_owned(),
        })
    }
}

impl Drop for PtyLink {
    fn drop(&mut self) {
        // Only remove the link if it is still ours: another run may have replaced it.
        let ours = std::fs::read_link(&self.link).is_ok_and(|t| t == self.target);
        if !ours {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.link) {
            tracing::warn!(link = %self.link.display(), error = %e, "Could not remove the pty link.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_replaces_a_stale_symlink_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("rig0");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        let guard = PtyLink::create(&link, Path::new("/dev/null")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/null"));
        drop(guard);
        assert!(std::fs::symlink_metadata(&link).is_err());
    }

    #[test]
    fn link_refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("precious");
        std::fs::write(&file, "data").unwrap();
        assert!(matches!(
            PtyLink::create(&file, Path::new("/dev/null")),
            Err(SimError::PtyLink { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
    }
}
