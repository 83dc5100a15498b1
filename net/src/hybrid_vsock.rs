//! The client side of a Firecracker-style hybrid vsock socket: the host reaches port P of
//! the guest behind a Unix socket (`vhost-device-vsock --uds-path`, or emberd's own VMM)
//! by connecting to it, writing `CONNECT P\n` and reading `OK HOST_PORT\n`; from then on
//! the stream is the guest's connection.

use std::io;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest acknowledgement line accepted (`OK ` and a 32-bit port).
const MAX_REPLY: usize = 32;

/// Connects to guest port `port` through the hybrid socket at `path`.
pub async fn connect(path: &Path, port: u32) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(path).await?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    // Byte by byte: whatever follows the line already belongs to the guest's stream.
    let mut reply = Vec::new();
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        reply.push(byte);
        if reply.len() > MAX_REPLY {
            return Err(refused(&reply));
        }
    }
    let acknowledged = reply
        .strip_prefix(b"OK ")
        .and_then(|port| std::str::from_utf8(port).ok())
        .is_some_and(|port| port.parse::<u32>().is_ok());
    if !acknowledged {
        return Err(refused(&reply));
    }
    Ok(stream)
}

fn refused(reply: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "the hybrid vsock socket answered {:?} instead of OK",
            String::from_utf8_lossy(reply)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A hybrid socket that answers `reply` to a `CONNECT` and then sends `after`.
    async fn peer(path: &Path, reply: &'static str, after: &'static [u8]) {
        let listener = crate::listen::bind_unix(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 5000\n");
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.write_all(after).await.unwrap();
        });
    }

    #[tokio::test]
    async fn connects_and_keeps_the_bytes_after_the_ok_line() {
        let dir = std::env::temp_dir().join(format!("ember-hybrid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vm.sock");
        peer(&path, "OK 1073741824\n", b"guest").await;
        let mut stream = connect(&path, 5000).await.unwrap();
        let mut guest = [0; 5];
        stream.read_exact(&mut guest).await.unwrap();
        assert_eq!(&guest, b"guest");

        peer(&path, "NO\n", b"").await;
        let refused = connect(&path, 5000).await.unwrap_err();
        assert!(refused.to_string().contains("\"NO\""), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
