//! The cluster's certificates: one CA, a serving certificate for the API server on loopback, a
//! client certificate per component identity, and the service-account signing key. EC P-256
//! throughout (fast to generate; every component accepts it).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::ClusterError;

/// A certificate and its key as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the components are started with.
#[derive(Clone, Debug)]
pub struct Pki {
    pub ca: CertFiles,
    pub apiserver: CertFiles,
    /// The API server's client identity towards the kubelet.
    pub apiserver_kubelet_client: CertFiles,
    /// `system:masters`: the harness and the cluster bring-up.
    pub admin: CertFiles,
    pub controller_manager: CertFiles,
    pub scheduler: CertFiles,
    pub kubelet: CertFiles,
    /// Signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Verifies them (the API server reads no public key out of a PKCS#8 private key file).
    pub service_account_public: PathBuf,
}

/// A client identity: common name and organisations (Kubernetes groups).
struct Identity<'a> {
    file: &'a str,
    common_name: &'a str,
    groups: &'a [&'a str],
}

impl Pki {
    /// Writes a fresh PKI into `dir` (created). `node_name` is the kubelet's identity.
    pub fn create(dir: &Path, node_name: &str) -> Result<Pki, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("create", dir, e))?;
        let ca_key = KeyPair::generate().map_err(cert_error("CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_error("CA"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "csi-clone-conformance local cluster CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error("CA"))?;
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let apiserver = serving(
            dir,
            &issuer,
            "apiserver",
            // The in-cluster service name and IP as well, so pods could reach it the usual way.
            &[
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        )?;
        let node_cn = format!("system:node:{node_name}");
        let client = |file, common_name, groups| {
            client(
                dir,
                &issuer,
                Identity {
                    file,
                    common_name,
                    groups,
                },
            )
        };
        let pki = Pki {
            ca,
            apiserver,
            apiserver_kubelet_client: client(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                &["system:masters"],
            )?,
            admin: client("admin", "csi-clone-conformance-admin", &["system:masters"])?,
            controller_manager: client(
                "controller-manager",
                "system:kube-controller-manager",
                &[],
            )?,
            scheduler: client("scheduler", "system:kube-scheduler", &[])?,
            kubelet: client("kubelet", &node_cn, &["system:nodes"])?,
            service_account_key: dir.join("service-account.key"),
            service_account_public: dir.join("service-account.pub"),
        };
        let sa_key = KeyPair::generate().map_err(cert_error("service-account key"))?;
        write_private(&pki.service_account_key, &sa_key.serialize_pem())?;
        std::fs::write(&pki.service_account_public, sa_key.public_key_pem())
            .map_err(|e| ClusterError::io("write", &pki.service_account_public, e))?;
        Ok(pki)
    }
}

fn serving(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    file: &str,
    names: &[&str],
) -> Result<CertFiles, ClusterError> {
    let key = KeyPair::generate().map_err(cert_error(file))?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .map_err(cert_error(file))?;
    params.distinguished_name.push(DnType::CommonName, file);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).map_err(cert_error(file))?;
    write_pair(dir, file, &cert.pem(), &key)
}

fn client(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    identity: Identity<'_>,
) -> Result<CertFiles, ClusterError> {
    let key = KeyPair::generate().map_err(cert_error(identity.file))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(cert_error(identity.file))?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.common_name);
    for group in identity.groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, issuer)
        .map_err(cert_error(identity.file))?;
    write_pair(dir, identity.file, &cert.pem(), &key)
}

fn write_pair(
    dir: &Path,
    file: &str,
    cert_pem: &str,
    key: &KeyPair,
) -> Result<CertFiles, ClusterError> {
    let files = CertFiles {
        cert: dir.join(format!("{file}.crt")),
        key: dir.join(format!("{file}.key")),
    };
    std::fs::write(&files.cert, cert_pem).map_err(|e| ClusterError::io("write", &files.cert, e))?;
    write_private(&files.key, &key.serialize_pem())?;
    Ok(files)
}

/// Keys are readable by root only.
fn write_private(path: &Path, pem: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(|e| ClusterError::io("write", path, e))
}

fn cert_error(what: &str) -> impl Fn(rcgen::Error) -> ClusterError + '_ {
    move |e| ClusterError::Certificate {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_file_with_private_keys_0600() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path(), "localhost").unwrap();
        for files in [&pki.ca, &pki.apiserver, &pki.kubelet, &pki.admin] {
            let cert = std::fs::read_to_string(&files.cert).unwrap();
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(pki.service_account_key.is_file());
    }
}
