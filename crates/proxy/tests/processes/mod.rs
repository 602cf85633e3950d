//! Shared by the tests that run real `meshward-proxy` processes: a guard that kills a process
//! when the test ends, an echo application, raw HTTP/1.1 and waiting for a proxy's `/ready`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills the process when the test ends, pass or fail.
pub(crate) struct Proxy(pub(crate) Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP/1.1 application that answers every request with its request head as the body
/// (`connection: close`), one thread per connection.
pub(crate) fn start_echo_app(addr: SocketAddr) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16384];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&head).to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
}

/// Sends raw HTTP/1.1 and returns everything the server wrote before closing.
pub(crate) fn http(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).to_string())
}

/// Waits (up to 30 s) until the proxy with this admin address answers `/ready` with 200.
pub(crate) fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http(
            admin,
            "GET /ready HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n",
        ) && r.starts_with("HTTP/1.1 200")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("proxy with admin {admin} did not become ready");
}
