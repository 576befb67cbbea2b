//! The example lane worker: a tiny, std-only HTTP/1.1 server that lanes run.
//!
//! It has no dependencies so that it builds as a static binary with plain rustc
//! (`scripts/build-worker-image` does this) and is bind-mounted read-only into
//! a bare busybox image at `/usr/local/bin/lane-worker`:
//!
//! ```text
//! rustc -O -C target-feature=+crt-static --edition 2021 examples/lane-worker.rs -o lane-worker
//! lane-worker serve [--port N]      # default $LANE_WORKER_PORT, else 31417
//! ```
//!
//! Routes: `GET /healthz` answers `ok`; `GET /` answers a JSON report of the
//! lane (`INBOX_LANE_ID` or `LANE`), the `INBOX_*`/`LANE_*` environment, and
//! every regular file under the codex directory (`LANE_CODEX_DIR`, default
//! `/root/.codex`) with its size and SHA-256. This is an example: it prints env
//! values, which a real worker holding secrets must not do.
//!
//! It is usually PID 1 in its container, and the kernel drops signals sent to
//! PID 1 that have no handler; so it installs a SIGTERM/SIGINT handler that
//! exits at once, which makes `podman stop` fast.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

const DEFAULT_PORT: u16 = 31417;
const DEFAULT_CODEX_DIR: &str = "/root/.codex";
const USAGE: &str = "usage: lane-worker serve [--port N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match parse_args(&args) {
        Ok(port) => port,
        Err(msg) => {
            eprintln!("lane-worker: {msg}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    install_exit_on_signal();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("lane-worker: listen on 0.0.0.0:{port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("lane-worker: listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(err) = handle(stream) {
                        eprintln!("lane-worker: connection: {err}");
                    }
                });
            }
            Err(err) => eprintln!("lane-worker: accept: {err}"),
        }
    }
    ExitCode::SUCCESS
}

/// Reads `serve [--port N | --port=N]`; the port falls back to `$LANE_WORKER_PORT`.
fn parse_args(args: &[String]) -> Result<u16, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("serve") => {}
        Some(other) => return Err(format!("unknown command {other:?}")),
        None => return Err("missing command".to_string()),
    }
    let mut port = None;
    while let Some(arg) = it.next() {
        let value = if arg == "--port" {
            it.next().ok_or("--port needs a value")?.clone()
        } else if let Some(v) = arg.strip_prefix("--port=") {
            v.to_string()
        } else {
            return Err(format!("unknown argument {arg:?}"));
        };
        port = Some(value);
    }
    let port = port.or_else(|| std::env::var("LANE_WORKER_PORT").ok());
    match port {
        None => Ok(DEFAULT_PORT),
        Some(p) => p.trim().parse().map_err(|_| format!("bad port {p:?}")),
    }
}

// std has no signal API; these are libc's own functions (std links libc).
unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

extern "C" fn exit_now(_signum: i32) {
    // SAFETY: _exit is async-signal-safe; nothing here needs flushing or unwinding.
    unsafe { _exit(0) }
}

fn install_exit_on_signal() {
    for signum in [SIGTERM, SIGINT] {
        // SAFETY: `exit_now` is an `extern "C" fn(i32)` that only calls `_exit`,
        // which is what a signal handler may do.
        unsafe { signal(signum, exit_now) };
    }
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(16 * 1024);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers up to the blank line; the body (none for GET) is ignored.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET" | "HEAD", "/") => ("200 OK", "application/json", report()),
        (_, "/healthz" | "/") => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// The JSON answer to `GET /`.
fn report() -> String {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| k.starts_with("INBOX_") || k.starts_with("LANE_"))
        .collect();
    let lane = env
        .get("INBOX_LANE_ID")
        .cloned()
        .or_else(|| std::env::var("LANE").ok());
    let codex_dir = PathBuf::from(
        std::env::var("LANE_CODEX_DIR").unwrap_or_else(|_| DEFAULT_CODEX_DIR.to_string()),
    );

    let mut out = String::from("{\n  \"lane\": ");
    match &lane {
        Some(l) => out.push_str(&json_string(l)),
        None => out.push_str("null"),
    }
    out.push_str(",\n  \"env\": {");
    for (i, (k, v)) in env.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\n    {}: {}", json_string(k), json_string(v));
    }
    out.push_str(if env.is_empty() { "},\n" } else { "\n  },\n" });
    let _ = writeln!(
        out,
        "  \"codex_dir\": {},",
        json_string(&codex_dir.to_string_lossy())
    );
    out.push_str("  \"codex_files\": [");
    let files = codex_files(&codex_dir);
    for (i, f) in files.files.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            "{sep}\n    {{\"path\": {}, \"size\": {}, \"sha256\": {}}}",
            json_string(&f.path),
            f.size,
            json_string(&f.sha256)
        );
    }
    out.push_str(if files.files.is_empty() { "]" } else { "\n  ]" });
    if !files.errors.is_empty() {
        out.push_str(",\n  \"codex_errors\": [");
        for (i, e) in files.errors.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}{}", json_string(e));
        }
        out.push(']');
    }
    out.push_str("\n}\n");
    out
}

struct CodexFile {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Default)]
struct CodexListing {
    files: Vec<CodexFile>,
    errors: Vec<String>,
}

/// Every regular file under `root` (symlinks are not followed), sorted by the
/// bytes of its `/`-separated relative path. A missing `root` lists nothing.
fn codex_files(root: &Path) -> CodexListing {
    let mut listing = CodexListing::default();
    if root.is_dir() {
        walk(root, "", &mut listing);
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    listing
}

fn walk(dir: &Path, prefix: &str, listing: &mut CodexListing) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(err) => {
            listing.errors.push(format!("{}: {err}", dir.display()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                listing.errors.push(format!("{}: {err}", dir.display()));
                continue;
            }
        };
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, &format!("{rel}/"), listing),
            Ok(t) if t.is_file() => match hash_file(&path) {
                Ok((size, sha256)) => listing.files.push(CodexFile {
                    path: rel,
                    size,
                    sha256,
                }),
                Err(err) => listing.errors.push(format!("{}: {err}", path.display())),
            },
            Ok(_) => {}
            Err(err) => listing.errors.push(format!("{}: {err}", path.display())),
        }
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finish())))
}

/// A JSON string literal for `s`, quotes included.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 (FIPS 180-4), streaming.
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    used: usize,
    total: u64,
}

#[rustfmt::skip]
const H0: [u32; 8] = [
    0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
];

#[rustfmt::skip]
const K: [u32; 64] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
];

impl Sha256 {
    fn new() -> Self {
        Sha256 {
            state: H0,
            block: [0; 64],
            used: 0,
            total: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        while !data.is_empty() {
            let take = (64 - self.used).min(data.len());
            self.block[self.used..self.used + take].copy_from_slice(&data[..take]);
            self.used += take;
            data = &data[take..];
            if self.used == 64 {
                self.compress();
                self.used = 0;
            }
        }
    }

    fn finish(mut self) -> [u8; 32] {
        let bit_len = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.used != 56 {
            self.update(&[0]);
        }
        self.update(&bit_len.to_be_bytes());
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    // a..h, w: the names FIPS 180-4 uses, so the rounds read like the standard.
    #[allow(clippy::many_single_char_names)]
    fn compress(&mut self) {
        let mut w = [0u32; 64];
        for (i, chunk) in self.block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lower-hex SHA-256 of `data`.
    fn sha256_hex(data: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(data);
        hex(&h.finish())
    }

    #[test]
    fn sha256_matches_the_fips_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(sha256_hex(input), want);
        }
    }

    #[test]
    fn sha256_streams_across_block_boundaries() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Sha256::new();
        for piece in data.chunks(7) {
            h.update(piece);
        }
        assert_eq!(hex(&h.finish()), sha256_hex(&data));
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            sha256_hex(&million_a),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            json_string("a\"b\\c\nd\u{1}é"),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    #[test]
    fn args_take_a_port() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["serve", "--port", "8080"])), Ok(8080));
        assert_eq!(parse_args(&args(&["serve", "--port=9"])), Ok(9));
        assert!(parse_args(&args(&["serve", "--port", "x"])).is_err());
        assert!(parse_args(&args(&["nope"])).is_err());
        assert!(parse_args(&args(&[])).is_err());
    }
}
