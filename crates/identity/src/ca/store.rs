//! The CA's files on disk, in Istio's `cacerts` layout (authentication.md §1.7): `ca-cert.pem`
//! (signing certificate), `ca-key.pem`, `cert-chain.pem` (signing certificate → … → root),
//! `root-cert.pem` (one or more roots). A self-signed CA writes the same four files, so a
//! directory made by `meshward ca init` is also a valid plug-in directory.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshward_api::TrustDomain;

use super::{CaError, CertificateAuthority};
use crate::workload::KeyAlgorithm;

/// `ca-cert.pem`.
pub const CA_CERT: &str = "ca-cert.pem";
/// `ca-key.pem`.
pub const CA_KEY: &str = "ca-key.pem";
/// `cert-chain.pem`.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// `root-cert.pem`.
pub const ROOT_CERT: &str = "root-cert.pem";

/// §1.7: "alternative key names `tls.crt`, `tls.key`, `ca.crt` are accepted".
const ALTERNATIVE_NAMES: [(&str, &str); 3] = [
    (CA_CERT, "tls.crt"),
    (CA_KEY, "tls.key"),
    (ROOT_CERT, "ca.crt"),
];

/// The four PEM texts of a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFiles {
    /// `ca-cert.pem`.
    pub ca_cert: String,
    /// `ca-key.pem`.
    pub ca_key: String,
    /// `cert-chain.pem`.
    pub cert_chain: String,
    /// `root-cert.pem`.
    pub root_cert: String,
}

/// A CA directory problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A required file is missing.
    #[error(
        "{dir}: missing {file} (a CA directory holds ca-cert.pem, ca-key.pem, root-cert.pem and optionally cert-chain.pem)"
    )]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// The file name.
        file: &'static str,
    },
    /// `init` would overwrite an existing CA.
    #[error("{dir} already holds a CA ({file} exists); refusing to overwrite it")]
    Exists {
        /// The directory.
        dir: PathBuf,
        /// The file found.
        file: &'static str,
    },
    /// The files are present but do not form a usable CA.
    #[error("{dir}: {source}")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: CaError,
    },
}

/// A directory holding a CA.
#[derive(Debug, Clone)]
pub struct CaDir {
    path: PathBuf,
}

impl CaDir {
    /// The CA directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a CA has been written here.
    pub fn exists(&self) -> bool {
        self.path.join(CA_KEY).exists() && self.path.join(CA_CERT).exists()
    }

    /// Loads the CA if the directory holds one, otherwise generates a self-signed root and
    /// persists it ("generated on first start and persisted"). Returns whether it was created.
    pub fn load_or_init(
        &self,
        trust_domain: TrustDomain,
        algorithm: KeyAlgorithm,
    ) -> Result<(CertificateAuthority, bool), StoreError> {
        if self.exists() {
            return Ok((self.load(trust_domain)?, false));
        }
        Ok((
            self.init_self_signed(trust_domain, algorithm, super::DEFAULT_ROOT_TTL)?,
            true,
        ))
    }

    /// Generates a self-signed root CA and writes it. Refuses to overwrite an existing CA.
    pub fn init_self_signed(
        &self,
        trust_domain: TrustDomain,
        algorithm: KeyAlgorithm,
        root_lifetime: Duration,
    ) -> Result<CertificateAuthority, StoreError> {
        self.refuse_overwrite()?;
        let ca = CertificateAuthority::generate_root(trust_domain, algorithm, root_lifetime)
            .map_err(|source| self.invalid(source))?;
        self.write(&ca.to_files())?;
        Ok(ca)
    }

    /// Validates a plug-in CA directory (Istio's `cacerts` files) and copies it here.
    pub fn install_plugin(
        &self,
        plugin_dir: &Path,
        trust_domain: TrustDomain,
    ) -> Result<CertificateAuthority, StoreError> {
        self.refuse_overwrite()?;
        let plugin = CaDir::new(plugin_dir);
        let ca = plugin.load(trust_domain)?;
        self.write(&ca.to_files())?;
        Ok(ca)
    }

    /// Loads the CA in this directory.
    pub fn load(&self, trust_domain: TrustDomain) -> Result<CertificateAuthority, StoreError> {
        let ca_cert = self.read_required(CA_CERT)?;
        let ca_key = self.read_required(CA_KEY)?;
        let root_cert = self.read_required(ROOT_CERT)?;
        let chain = self.read_optional(CERT_CHAIN)?;
        CertificateAuthority::from_pem(
            trust_domain,
            &ca_cert,
            &ca_key,
            chain.as_deref(),
            &root_cert,
        )
        .map_err(|source| self.invalid(source))
    }

    fn invalid(&self, source: CaError) -> StoreError {
        StoreError::Invalid {
            dir: self.path.clone(),
            source,
        }
    }

    fn refuse_overwrite(&self) -> Result<(), StoreError> {
        for file in [CA_KEY, CA_CERT] {
            if self.path.join(file).exists() {
                return Err(StoreError::Exists {
                    dir: self.path.clone(),
                    file,
                });
            }
        }
        Ok(())
    }

    fn read_required(&self, file: &'static str) -> Result<Vec<u8>, StoreError> {
        if let Some(bytes) = self.read_optional(file)? {
            return Ok(bytes);
        }
        Err(StoreError::Missing {
            dir: self.path.clone(),
            file,
        })
    }

    fn read_optional(&self, file: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        let alternative = ALTERNATIVE_NAMES
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, alt)| *alt);
        for name in std::iter::once(file).chain(alternative) {
            let path = self.path.join(name);
            match fs::read(&path) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path, source }),
            }
        }
        Ok(None)
    }

    fn write(&self, files: &PluginFiles) -> Result<(), StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        for (name, text, private) in [
            (CA_KEY, &files.ca_key, true),
            (CA_CERT, &files.ca_cert, false),
            (CERT_CHAIN, &files.cert_chain, false),
            (ROOT_CERT, &files.root_cert, false),
        ] {
            let path = self.path.join(name);
            write_file(&path, text.as_bytes(), private).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Writes a file; private keys are created with mode 0600 so they are never readable by others,
/// not even for an instant.
pub(crate) fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
