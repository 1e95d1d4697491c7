//! The agent's state directory: its credential and, on machines without `/etc/machine-id`, the
//! random machine id it made up once. Files are written atomically (temp file, fsync, rename)
//! with mode 0600, in a directory created with mode 0700.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Secret;

/// The file that holds the per-agent credential.
pub const CREDENTIAL_FILE: &str = "credential";
/// The file that holds a generated machine id.
pub const MACHINE_ID_FILE: &str = "machine-id";

/// The state directory (`--state-dir`).
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stored credential, if there is a readable, non-empty one.
    pub fn credential(&self) -> Option<Secret> {
        Secret::new(&fs::read_to_string(self.dir.join(CREDENTIAL_FILE)).ok()?)
    }

    /// Stores the credential, replacing any earlier one.
    pub fn store_credential(&self, credential: &Secret) -> io::Result<()> {
        self.write_private(CREDENTIAL_FILE, credential.expose().as_bytes())
    }

    /// The stored machine id, if any.
    pub fn machine_id(&self) -> Option<String> {
        let id = fs::read_to_string(self.dir.join(MACHINE_ID_FILE)).ok()?;
        valid_machine_id(&id)
    }

    /// Writes `contents` to `name` in the directory: all of it or nothing, readable by the owner
    /// only.
    pub fn write_private(&self, name: &str, contents: &[u8]) -> io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let target = self.dir.join(name);
        let temp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            fs::rename(&temp, &target)?;
            // Make the rename itself durable.
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// A machine id as systemd writes it (hex, not `uninitialized`), trimmed.
pub fn valid_machine_id(text: &str) -> Option<String> {
    let id = text.trim();
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// Where the stable machine id came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineIdSource {
    /// The host's `/etc/machine-id` (or D-Bus's copy).
    Host,
    /// One made up earlier and kept in the state directory.
    Stored,
    /// Made up now and stored.
    Generated,
    /// Made up now, but it could not be stored: it will change at the next start.
    Unsaved(String),
}

/// The machine's stable id: the host's machine-id, else one kept in the state directory, else a
/// new random one (stored for next time).
pub fn machine_id(host_root: &Path, state: &StateDir) -> (String, MachineIdSource) {
    for rel in ["etc/machine-id", "var/lib/dbus/machine-id"] {
        if let Some(id) = fs::read_to_string(host_root.join(rel))
            .ok()
            .and_then(|t| valid_machine_id(&t))
        {
            return (id, MachineIdSource::Host);
        }
    }
    if let Some(id) = state.machine_id() {
        return (id, MachineIdSource::Stored);
    }
    let id = random_hex(16);
    match state.write_private(MACHINE_ID_FILE, format!("{id}\n").as_bytes()) {
        Ok(()) => (id, MachineIdSource::Generated),
        Err(e) => (id, MachineIdSource::Unsaved(e.to_string())),
    }
}

/// `bytes` random bytes from the kernel, as lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        // No /dev/urandom (a bare chroot): time and pid still differ between machines.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = now ^ (u128::from(std::process::id()) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (mixed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn credential_round_trip_is_private() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path().join("a/b"));
        assert_eq!(state.credential(), None);
        state
            .store_credential(&Secret::new("msa_one").unwrap())
            .unwrap();
        state
            .store_credential(&Secret::new("msa_two").unwrap())
            .unwrap();
        assert_eq!(state.credential().unwrap().expose(), "msa_two");
        assert_eq!(mode(&state.path().join(CREDENTIAL_FILE)), 0o600);
        assert_eq!(mode(state.path()), 0o700);
        let names: Vec<_> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CREDENTIAL_FILE], "no temp file left behind");
    }

    #[test]
    fn machine_ids() {
        assert_eq!(valid_machine_id("ABCdef0123\n").unwrap(), "abcdef0123");
        assert_eq!(valid_machine_id("uninitialized\n"), None);
        assert_eq!(valid_machine_id(""), None);

        let host = tempfile::tempdir().unwrap();
        let state = StateDir::new(host.path().join("state"));
        let (id, source) = machine_id(host.path(), &state);
        assert_eq!(source, MachineIdSource::Generated);
        assert_eq!(id.len(), 32);
        assert_eq!(
            machine_id(host.path(), &state),
            (id, MachineIdSource::Stored)
        );

        fs::create_dir_all(host.path().join("etc")).unwrap();
        fs::write(
            host.path().join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        assert_eq!(
            machine_id(host.path(), &state),
            (
                "0123456789abcdef0123456789abcdef".to_string(),
                MachineIdSource::Host
            )
        );
    }
}
