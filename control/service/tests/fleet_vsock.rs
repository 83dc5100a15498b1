//! The hybrid vsock transport on a host, end to end with the real binaries: control's
//! fleet listener on the Unix socket a guest's vsock connection arrives on (`PATH_PORT`),
//! a real `emberd` registering, heartbeating and fetching code through it, and control
//! invoking that worker through the VM's hybrid socket (`PATH`, `CONNECT PORT`). The VM's
//! side of the hybrid socket is played by [`HybridSocket`], which does what
//! `vhost-device-vsock` does for a guest port, forwarding to the worker's TCP listener;
//! real micro-VMs run the function (KVM required).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ember_testkit::binaries::binary;
use ember_testkit::worker::require_kvm;
use ember_testkit::{stdout_lines, write_packages, Control};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The vsock port guests dial control on, in these tests.
const CONTROL_PORT: &str = "9444";

/// The host end of a VM's hybrid vsock socket: every connection says `CONNECT PORT`, is
/// answered `OK`, and is then joined to `127.0.0.1:PORT`, standing in for the guest's
/// vsock port. Each port asked for is reported on the channel.
struct HybridSocket {
    connects: mpsc::Receiver<u32>,
}

impl HybridSocket {
    fn serve(path: &Path) -> HybridSocket {
        let listener = UnixListener::bind(path).unwrap();
        let (report, connects) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let report = report.clone();
                std::thread::spawn(move || forward(stream, &report));
            }
        });
        HybridSocket { connects }
    }
}

/// Terminates the hybrid protocol on `host` and joins it to the guest port it names.
fn forward(host: UnixStream, report: &mpsc::Sender<u32>) {
    let mut reader = BufReader::new(host.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let port: u32 = line
        .strip_prefix("CONNECT ")
        .and_then(|port| port.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not a CONNECT line: {line:?}"));
    let _ = report.send(port);
    let guest = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    (&host).write_all(b"OK 1073741824\n").unwrap();
    // Anything read past the line already belongs to the guest.
    let buffered = reader.buffer().to_vec();
    (&guest).write_all(&buffered).unwrap();
    let (mut from_host, mut to_guest) = (reader.into_inner(), guest.try_clone().unwrap());
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_host, &mut to_guest);
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let (mut from_guest, mut to_host) = (guest, host);
    let _ = std::io::copy(&mut from_guest, &mut to_host);
    let _ = to_host.shutdown(std::net::Shutdown::Write);
    let _ = upstream.join();
}

/// `emberd serve` reaching control through `control_socket`, serving its API on a free
/// loopback port it advertises as `vsock://3:PORT`; returns it, its id and the port.
fn worker(control: &Control, control_socket: &Path, state_dir: &Path) -> (Child, String, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(binary("emberd", "emberd"))
        .arg("serve")
        .arg("--control")
        .arg(format!("unix://{}", control_socket.display()))
        .arg("--ca")
        .arg(control.ca())
        .arg("--token-file")
        .arg(control.data_dir.join("worker-token"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--advertise", &format!("vsock://3:{port}")])
        .args(["--name", "vsock-worker", "--metrics-listen", "off"])
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start emberd serve");
    let line = stdout_lines(&mut child)
        .recv_timeout(Duration::from_secs(60))
        .expect("emberd registers within a minute");
    let id = line
        .strip_prefix("emberd worker ")
        .and_then(|rest| rest.strip_suffix(&format!(" serving on vsock://3:{port}")))
        .unwrap_or_else(|| panic!("unexpected emberd line: {line}"))
        .to_owned();
    (child, id, port)
}

#[test]
fn a_worker_joins_and_is_invoked_through_hybrid_vsock_sockets() {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let vm_socket: PathBuf = dir.path().join("vm.sock");
    let control = Control::start_with(
        &dir.path().join("data"),
        &[
            "--heartbeat-ms",
            "200",
            "--fleet-vsock-uds",
            vm_socket.to_str().unwrap(),
            "--fleet-vsock-port",
            CONTROL_PORT,
        ],
    );
    let hybrid = HybridSocket::serve(&vm_socket);
    let control_socket = dir.path().join(format!("vm.sock_{CONTROL_PORT}"));
    let (mut child, id, port) = worker(&control, &control_socket, &dir.path().join("worker"));

    // Control signed the worker's certificate for the name it gave the worker, not for
    // the claimed CID.
    let cert = std::fs::read(dir.path().join("worker/worker.pem")).unwrap();
    let cert = CertificateDer::from_pem_slice(&cert).unwrap();
    assert_eq!(
        ember_fleet::tls::common_name(&cert).as_deref(),
        Some(id.as_str())
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let names = parsed.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", names.value.general_names),
        format!("[DNSName({:?})]", ember_fleet::tls::worker_name(&id))
    );

    write_packages(dir.path());
    control.create_function("hello", &dir.path().join("hello.zip"), &[]);
    // Heartbeats keep the worker known: silent for 3 (600 ms) it would be dead.
    std::thread::sleep(Duration::from_millis(1500));
    let out = dir.path().join("response.json");
    let printed = control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--payload",
        r#"{"name":"vsock"}"#,
        out.to_str().unwrap(),
    ]);
    assert_eq!(printed["StatusCode"], 200, "{printed}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        r#"{"message":"Hello, vsock!"}"#
    );
    assert_eq!(
        hybrid.connects.try_recv(),
        Ok(u32::from(port)),
        "control reached the worker through the VM's hybrid socket"
    );
    let _ = child.kill();
    let _ = child.wait();
}
