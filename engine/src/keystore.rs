//! The encrypted keystore: `<data-dir>/identity.age`.
//!
//! The file is an age file encrypted with a passphrase (scrypt). Its
//! plaintext is `icn-keystore/v1\n<hex secret>\n`. It is written atomically
//! (temporary file, fsync, rename, fsync of the directory) with mode 0600, so
//! a crash leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use icn_schemas::Did;

use crate::identity::Keypair;

/// File name of the keystore inside the data directory.
pub const KEYSTORE_FILE: &str = "identity.age";

/// Environment variable holding the passphrase for unattended starts.
pub const PASSPHRASE_ENV: &str = "ICN_KEYSTORE_PASSPHRASE";

/// The deployment guide's older name for [`PASSPHRASE_ENV`], still read.
pub const LEGACY_PASSPHRASE_ENV: &str = "ICN_PASSPHRASE";

const PLAINTEXT_HEADER: &str = "icn-keystore/v1\n";

/// The optional second line: the member a rotated key signs for.
const MEMBER_PREFIX: &str = "member ";

/// Highest scrypt work factor (log2 N) accepted when unlocking. age targets
/// about a second of work when it encrypts, which is log N ≈ 18 on a laptop;
/// a fixed ceiling keeps a keystore made on a fast machine readable on a slow
/// one, and bounds the work a hostile file can demand.
const MAX_WORK_FACTOR: u8 = 22;

/// Why the keystore could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// There is no keystore file.
    #[error("no keystore at {0}: create one with `icnctl id init`")]
    Missing(PathBuf),
    /// The passphrase does not open the keystore.
    #[error("wrong passphrase for the keystore at {0}")]
    WrongPassphrase(PathBuf),
    /// The file is not a keystore, or is damaged.
    #[error("the keystore at {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A keystore already exists where a new one was to be created.
    #[error("a keystore already exists at {0}")]
    AlreadyExists(PathBuf),
    /// No passphrase in the environment and no terminal to ask on.
    #[error("no passphrase: set {PASSPHRASE_ENV} or run in a terminal ({0})")]
    NoPassphrase(String),
    /// The passphrase is empty.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    /// Reading or writing failed.
    #[error("keystore I/O at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A passphrase, zeroed when dropped.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase; refuses an empty one.
    pub fn new(passphrase: impl Into<String>) -> Result<Self, KeystoreError> {
        let p = Zeroizing::new(passphrase.into());
        if p.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        Ok(Passphrase(p))
    }

    /// The passphrase from [`PASSPHRASE_ENV`] (or the legacy
    /// `ICN_PASSPHRASE`), or asked for on the terminal.
    pub fn from_env_or_prompt(prompt: &str) -> Result<Self, KeystoreError> {
        match std::env::var(PASSPHRASE_ENV).or_else(|_| std::env::var(LEGACY_PASSPHRASE_ENV)) {
            Ok(p) => Self::new(p),
            Err(_) => rpassword::prompt_password(prompt)
                .map_err(|e| KeystoreError::NoPassphrase(e.to_string()))
                .and_then(Self::new),
        }
    }

    fn secret(&self) -> SecretString {
        SecretString::from(self.0.as_str().to_owned())
    }
}

/// The keystore file of a data directory.
#[derive(Debug, Clone)]
pub struct Keystore {
    path: PathBuf,
    work_factor: Option<u8>,
}

impl Keystore {
    /// The keystore at `<data_dir>/identity.age`.
    pub fn in_dir(data_dir: &Path) -> Self {
        Keystore {
            path: data_dir.join(KEYSTORE_FILE),
            work_factor: None,
        }
    }

    /// A keystore file anywhere: an export, or one to import.
    pub fn at(path: &Path) -> Self {
        Keystore {
            path: path.to_owned(),
            work_factor: None,
        }
    }

    /// Uses a fixed scrypt work factor (log2 N) when writing instead of age's
    /// one-second target. Tests use a small one to stay fast.
    pub fn with_work_factor(mut self, log_n: u8) -> Self {
        self.work_factor = Some(log_n.clamp(1, MAX_WORK_FACTOR));
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Unlocks the keystore: the key.
    pub fn load(&self, passphrase: &Passphrase) -> Result<Keypair, KeystoreError> {
        self.load_member(passphrase).map(|(key, _)| key)
    }

    /// Unlocks the keystore: the key, and the member it signs for (its own
    /// DID, unless the member rotated its DID key's powers to this key).
    pub fn load_member(&self, passphrase: &Passphrase) -> Result<(Keypair, Did), KeystoreError> {
        let path = &self.path;
        let ciphertext = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::Missing(path.clone()));
            }
            Err(source) => {
                return Err(KeystoreError::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let decryptor = age::Decryptor::new_buffered(ciphertext.as_slice())
            .map_err(|e| corrupt(e.to_string()))?;
        if !decryptor.is_scrypt() {
            return Err(corrupt("not a passphrase-encrypted age file".into()));
        }
        let mut identity = age::scrypt::Identity::new(passphrase.secret());
        identity.set_max_work_factor(MAX_WORK_FACTOR);
        let mut reader = decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                // The passphrase unwraps the file key through an AEAD: a wrong
                // passphrase and a damaged key stanza look alike, and a wrong
                // passphrase is by far the likelier.
                age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed
                | age::DecryptError::NoMatchingKeys => KeystoreError::WrongPassphrase(path.clone()),
                other => corrupt(other.to_string()),
            })?;
        let mut plaintext = Zeroizing::new(Vec::new());
        reader
            .read_to_end(&mut plaintext)
            .map_err(|e| corrupt(e.to_string()))?;
        let text = std::str::from_utf8(&plaintext).map_err(|_| corrupt("not text".into()))?;
        let mut lines = text
            .strip_prefix(PLAINTEXT_HEADER)
            .and_then(|rest| rest.strip_suffix('\n'))
            .ok_or_else(|| corrupt("not an ICN keystore".into()))?
            .split('\n');
        let hex_secret = lines.next().unwrap_or_default();
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_secret, secret.as_mut())
            .map_err(|_| corrupt("the secret is not 32 bytes of hex".into()))?;
        let key = Keypair::from_secret(&secret);
        let member = match lines.next() {
            None => key.did(),
            Some(line) => line
                .strip_prefix(MEMBER_PREFIX)
                .and_then(|did| did.parse().ok())
                .ok_or_else(|| corrupt("the second line is not `member <DID>`".into()))?,
        };
        Ok((key, member))
    }

    /// Creates the keystore for `keypair`; refuses to overwrite one.
    pub fn create(&self, keypair: &Keypair, passphrase: &Passphrase) -> Result<(), KeystoreError> {
        if self.exists() {
            return Err(KeystoreError::AlreadyExists(self.path.clone()));
        }
        self.write(keypair, passphrase)
    }

    /// Writes the keystore for `keypair`, replacing any that exists, atomically.
    pub fn write(&self, keypair: &Keypair, passphrase: &Passphrase) -> Result<(), KeystoreError> {
        self.write_member(keypair, &keypair.did(), passphrase)
    }

    /// Writes the keystore for `keypair` signing for `member` (after a
    /// rotation, a DID other than its own), replacing any, atomically.
    pub fn write_member(
        &self,
        keypair: &Keypair,
        member: &Did,
        passphrase: &Passphrase,
    ) -> Result<(), KeystoreError> {
        let io = |source| KeystoreError::Io {
            path: self.path.clone(),
            source,
        };
        let member_line = if *member == keypair.did() {
            String::new()
        } else {
            format!("{MEMBER_PREFIX}{member}\n")
        };
        let plaintext = Zeroizing::new(format!(
            "{PLAINTEXT_HEADER}{}\n{member_line}",
            hex::encode(keypair.secret().as_slice())
        ));
        let mut recipient = age::scrypt::Recipient::new(passphrase.secret());
        if let Some(log_n) = self.work_factor {
            recipient.set_work_factor(log_n);
        }
        let ciphertext = age::encrypt(&recipient, plaintext.as_bytes())
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        write_atomically(&self.path, &ciphertext).map_err(io)
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one:
/// temporary file (mode 0600), fsync, rename over `path`, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.unwrap_or_default(),
        std::process::id()
    ));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Keystore {
        Keystore::in_dir(dir).with_work_factor(2)
    }

    #[test]
    fn create_then_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = store(dir.path());
        let kp = Keypair::generate().expect("randomness");
        let pass = Passphrase::new("correct horse").expect("non-empty");
        ks.create(&kp, &pass).expect("create");
        assert_eq!(ks.load(&pass).expect("load").did(), kp.did());
        assert!(matches!(
            ks.create(&kp, &pass),
            Err(KeystoreError::AlreadyExists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(ks.path()).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_rotated_key_keeps_the_member_it_signs_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = store(dir.path());
        let pass = Passphrase::new("correct horse").expect("non-empty");
        let (first, second) = (
            Keypair::generate().expect("randomness"),
            Keypair::generate().expect("randomness"),
        );
        ks.create(&first, &pass).expect("create");
        let (key, member) = ks.load_member(&pass).expect("load");
        assert_eq!((key.did(), member), (first.did(), first.did()));
        ks.write_member(&second, &first.did(), &pass)
            .expect("rotate");
        let (key, member) = ks.load_member(&pass).expect("load");
        assert_eq!((key.did(), member), (second.did(), first.did()));
        assert_eq!(ks.load(&pass).expect("load").did(), second.did());
    }

    #[test]
    fn missing_wrong_and_corrupt_are_distinct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = store(dir.path());
        let pass = Passphrase::new("correct horse").expect("non-empty");
        assert!(matches!(ks.load(&pass), Err(KeystoreError::Missing(_))));

        ks.create(&Keypair::generate().expect("randomness"), &pass)
            .expect("create");
        let wrong = Passphrase::new("battery staple").expect("non-empty");
        assert!(matches!(
            ks.load(&wrong),
            Err(KeystoreError::WrongPassphrase(_))
        ));

        fs::write(ks.path(), b"this is not an age file").expect("write");
        assert!(matches!(ks.load(&pass), Err(KeystoreError::Corrupt { .. })));

        // A valid age file whose payload is damaged.
        ks.write(&Keypair::generate().expect("randomness"), &pass)
            .expect("write");
        let mut bytes = fs::read(ks.path()).expect("read");
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff;
        fs::write(ks.path(), &bytes).expect("write");
        assert!(matches!(ks.load(&pass), Err(KeystoreError::Corrupt { .. })));
    }

    #[test]
    fn empty_passphrase_is_refused() {
        assert!(matches!(
            Passphrase::new(""),
            Err(KeystoreError::EmptyPassphrase)
        ));
    }
}
