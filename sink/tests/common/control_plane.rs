//! A real Kubernetes control plane for tests: etcd and kube-apiserver as
//! built by `deploy/kube/build.sh` (official Go modules, the release the lab
//! runs), on loopback ports of their own, in a scratch directory removed at
//! drop. No kubelet: tests create Pods bound to a node and write their status
//! themselves (podIP, phase), as a kubelet would.
//!
//! Authentication is a static token file: `admin` (group `system:masters`)
//! and `trace-sink` (no group, no permission until a test binds a role).
//! Authorization is RBAC, as in a cluster. The service account signing key is
//! an ECDSA P-256 key generated here with ring (no openssl needed).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, PodIP, PodStatus, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

/// Token of the cluster admin.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
/// Token of the user the sink runs as.
pub const SINK_TOKEN: &str = "trace-sink-token-for-tests";
/// That user's name.
pub const SINK_USER: &str = "trace-sink";

/// The directory with the binaries: `$TRACE_KUBE_BIN` or `deploy/kube/build/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRACE_KUBE_BIN") {
        return dir.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kube/build/bin")
}

fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the real Kubernetes components first with deploy/kube/build.sh \
         (./run-tests.sh does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running etcd + kube-apiserver; both are killed and the directory removed on drop.
pub struct ControlPlane {
    dir: PathBuf,
    etcd: Child,
    apiserver: Option<Child>,
    etcd_url: String,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers.
    pub async fn start() -> ControlPlane {
        let dir = std::env::temp_dir().join(format!(
            "trace-sink-kube-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,1,\"system:masters\"\n{SINK_TOKEN},{SINK_USER},2\n"),
        )
        .unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        std::fs::write(
            dir.join("sa.key"),
            pem::encode(&pem::Pem::new("PRIVATE KEY", key.as_ref().to_vec())),
        )
        .unwrap();
        // Its public half as SubjectPublicKeyInfo: the fixed DER header of an
        // id-ecPublicKey on prime256v1, then the uncompressed point.
        use ring::signature::KeyPair;
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            key.as_ref(),
            &rng,
        )
        .unwrap();
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        std::fs::write(
            dir.join("sa.pub"),
            pem::encode(&pem::Pem::new("PUBLIC KEY", spki)),
        )
        .unwrap();

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(bin("etcd"))
            .args([
                "--name=test",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=test={peer_url}"),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "etcd.log"))
            .spawn()
            .unwrap();
        let port = free_port();
        let mut cp = ControlPlane {
            url: format!("https://127.0.0.1:{port}"),
            dir,
            etcd,
            apiserver: None,
            etcd_url,
            port,
        };
        cp.start_apiserver().await;
        cp
    }

    fn apiserver_command(&self) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new(bin("kube-apiserver"));
        cmd.args([
            &format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            // no `kubernetes` Service endpoints: since v1.37 the reconciler refuses a
            // loopback advertise address, and nothing here reaches the API through it
            "--endpoint-reconciler-type=none",
            &format!("--secure-port={}", self.port),
            &format!("--cert-dir={}", d.join("certs").display()),
            &format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC",
            &format!("--service-account-key-file={}", d.join("sa.pub").display()),
            &format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=198.19.0.0/16",
        ])
        .stdout(Stdio::null())
        .stderr(log_file(d, "kube-apiserver.log"));
        cmd
    }

    /// (Re)starts kube-apiserver on the same port and waits until it is ready.
    pub async fn start_apiserver(&mut self) {
        assert!(self.apiserver.is_none(), "kube-apiserver already running");
        self.apiserver = Some(self.apiserver_command().spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(90);
        // The client verifies the server by the certificate kube-apiserver
        // writes into --cert-dir at its first start.
        while !self.dir.join("certs/apiserver.crt").exists() {
            self.assert_running(deadline, "no serving certificate");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = self.client(ADMIN_TOKEN).await;
        loop {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => break,
                other => {
                    self.assert_running(deadline, &format!("{other:?}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn assert_running(&mut self, deadline: Instant, what: &str) {
        if let Some(status) = self.apiserver.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "kube-apiserver exited ({status}); its log:\n{}",
                self.log_tail("kube-apiserver.log")
            );
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready within 90s ({what}); its log:\n{}",
            self.log_tail("kube-apiserver.log")
        );
    }

    /// Stops kube-apiserver (etcd keeps the cluster's state).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The apiserver's self-signed serving certificate (leaf and its CA).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("certs/apiserver.crt")).unwrap()
    }

    /// A kubeconfig file for `token`, verifying the server by its own CA.
    pub fn kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let ca = self.dir.join("certs/apiserver.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\n\
             current-context: test\n",
            self.url,
            ca.display()
        );
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client for `token`.
    pub async fn client(&self, token: &str) -> kube::Client {
        let path = self.kubeconfig(&format!("user-{}", &token[..5]), token);
        let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
        let mut config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .unwrap();
        // as trace-verify's client (verify/src/main.rs): a 503 from the service proxy
        // (no endpoint: there is no kubelet here) is an answer, not retried for minutes
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    }

    /// The admin's client.
    pub async fn admin(&self) -> kube::Client {
        self.client(ADMIN_TOKEN).await
    }

    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(name)).unwrap().into()
}

/// Creates a namespace and its `default` ServiceAccount (the ServiceAccount
/// admission plugin wants it; no controller-manager runs to create it).
pub async fn create_namespace(admin: &kube::Client, name: &str) {
    let ns: Api<Namespace> = Api::all(admin.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Err(e) = ns.create(&PostParams::default(), &obj).await {
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 409),
            "create namespace {name}: {e}"
        );
    }
    let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), name);
    let obj = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if let Err(e) = sa.create(&PostParams::default(), &obj).await {
        assert!(
            matches!(&e, kube::Error::Api(s) if s.code == 409),
            "create serviceaccount default in {name}: {e}"
        );
    }
}

/// Grants `user` the sink's ClusterRole: `list` and `watch` on Pods, nothing
/// else (the rules of deploy/sink/rbac.yaml), and waits until RBAC applies it.
pub async fn grant_sink_role(admin: &kube::Client, user: &str) {
    let rule = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".into()]),
        verbs: vec!["list".into(), "watch".into()],
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some("trace-sink-pod-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![rule]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("trace-sink-pod-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "trace-sink-pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            name: user.into(),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// Creates a Pod bound to `node` (as the scheduler would) and returns its uid.
pub async fn create_pod(admin: &kube::Client, ns: &str, name: &str, node: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "trace-agent" } },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 30,
            "containers": [{ "name": "otel-collector", "image": "otel-collector" }]
        }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    created.metadata.uid.unwrap()
}

/// Writes a Pod's status as a kubelet would: phase and IP.
pub async fn set_status(admin: &kube::Client, ns: &str, name: &str, phase: &str, ip: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let status = PodStatus {
        phase: Some(phase.into()),
        pod_ip: ip.map(Into::into),
        pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
        ..Default::default()
    };
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Deletes a Pod with a grace period: with no kubelet it stays terminating
/// until deleted again with `grace` 0.
pub async fn delete_pod(admin: &kube::Client, ns: &str, name: &str, grace: u32) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    pods.delete(name, &DeleteParams::default().grace_period(grace))
        .await
        .unwrap();
}

/// Polls `f` until it returns `Some`, at most `within`.
pub async fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
