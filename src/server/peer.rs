//! Who is calling: the owner uid of the client's end of an accepted loopback connection.
//!
//! Asked once per connection, before its first request is read. The kernel is asked through
//! `NETLINK_SOCK_DIAG` (inet_diag, one `SOCK_DIAG_BY_FAMILY` request with `INET_DIAG_REQ_V2`
//! for TCP and the exact address pair, answered with the socket's `idiag_uid`); when that
//! fails, `/proc/net/tcp` (and `tcp6`) is read line by line instead. Both work without
//! privilege for sockets in the caller's own network namespace, so the lookup still works
//! after `--user` has dropped root. The message layouts are described in
//! `docs/peer-lookup.md`; they are packed and unpacked here by hand, with safe code.
//!
//! The lookup proves which uid owns the client's socket at the moment of the lookup. It does
//! not prove who wrote the request bytes: a process can hand its connected socket to another
//! (SCM_RIGHTS, fork), and root can do anything. SECURITY.md says so.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol};

/// The local user behind a connection, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The owner uid of the client's socket.
    pub uid: u32,
    /// The uid's passwd name, if it has one (resolved once per uid, see [`NameCache`]).
    pub name: Option<Arc<str>>,
}

/// A caller's uid in a log line, or `unknown` when the connection's owner could not be
/// determined.
pub struct UidLabel(pub Option<u32>);

impl std::fmt::Display for UidLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(uid) => write!(f, "{uid}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Why the owner of a connection could not be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The two ends are of different address families (cannot be one TCP connection).
    #[error("address families differ")]
    MixedFamilies,
    /// A netlink socket call failed (socket, sendto or recv; `EAGAIN` if no reply was queued).
    #[error("netlink: {0}")]
    Netlink(Errno),
    /// The kernel answered with an error (`ENOENT`: no such socket, e.g. already closed).
    #[error("sock_diag answered errno {0}")]
    Kernel(i32),
    /// The reply did not parse, or described another socket.
    #[error("malformed sock_diag reply")]
    Malformed,
    /// `/proc/net/tcp*` could not be read.
    #[error("/proc/net/tcp: {0}")]
    Proc(std::io::ErrorKind),
    /// No socket with this address pair was listed.
    #[error("no such socket")]
    NotFound,
}

// Constants from <linux/netlink.h>, <linux/sock_diag.h> and <linux/inet_diag.h>.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// `inet_diag_sockid`: ports (4), src (16), dst (16), interface (4), cookie (8).
const SOCKID_LEN: usize = 48;
/// `inet_diag_req_v2`: family, protocol, ext, pad (4), states (4), sockid (48).
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// The whole request message.
pub const REQUEST_LEN: usize = NLMSG_HDRLEN + REQ_LEN;
/// `inet_diag_msg`: family, state, timer, retrans (4), sockid (48), expires, rqueue, wqueue,
/// uid, inode (5 × 4).
const DIAG_MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// Offset of `idiag_uid` inside `inet_diag_msg`.
const DIAG_UID_OFFSET: usize = 4 + SOCKID_LEN + 12;
/// `INET_DIAG_NOCOOKIE`: match any socket cookie.
const NOCOOKIE: u32 = u32::MAX;
/// Room for one reply (an `inet_diag_msg` with no attributes requested is 88 bytes; an
/// error reply echoes our 72-byte request after its own 20 bytes).
const REPLY_BUF: usize = 512;
/// Distinct uids whose names are kept; beyond it names are looked up without caching.
const NAME_CACHE_MAX: usize = 4096;

/// The owner uid of the client's socket of a connection we accepted: `client` is the peer
/// address of the accepted socket, `server` its local address.
pub fn owner_uid(client: SocketAddr, server: SocketAddr) -> Result<u32, LookupError> {
    match netlink_owner(client, server) {
        Ok(uid) => Ok(uid),
        Err(netlink) => {
            tracing::debug!(error = %netlink, "sock_diag lookup failed; reading /proc/net/tcp");
            proc_owner(client, server)
        }
    }
}

/// [`owner_uid`] through `NETLINK_SOCK_DIAG` only.
pub fn netlink_owner(client: SocketAddr, server: SocketAddr) -> Result<u32, LookupError> {
    let request = encode_request(client, server, 1)?;
    let fd = socket::socket(
        AddressFamily::Netlink,
        socket::SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(LookupError::Netlink)?;
    socket::sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(LookupError::Netlink)?;
    // The kernel handles a sock_diag request inside sendto and queues the reply before it
    // returns, so a non-blocking receive never has to wait (and cannot hang this task).
    let mut reply = [0u8; REPLY_BUF];
    let n = socket::recv(fd.as_raw_fd(), &mut reply, MsgFlags::MSG_DONTWAIT)
        .map_err(LookupError::Netlink)?;
    decode_reply(
        reply.get(..n).ok_or(LookupError::Malformed)?,
        client,
        server,
        1,
    )
}

/// The request message for the client's socket: its source is `client`, its destination
/// `server` (the lookup is from the client's side, so the answer is the client's owner).
pub fn encode_request(
    client: SocketAddr,
    server: SocketAddr,
    seq: u32,
) -> Result<[u8; REQUEST_LEN], LookupError> {
    let family = family_of(client, server)?;
    let mut out = [0u8; REQUEST_LEN];
    // nlmsghdr: length, type, flags, sequence, port id (0: the kernel fills it in). All
    // netlink header and inet_diag fields are host order except ports and addresses.
    out[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    out[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    // inet_diag_req_v2
    let req = &mut out[NLMSG_HDRLEN..];
    req[0] = family;
    req[1] = IPPROTO_TCP;
    // idiag_ext 0 (no extra attributes), pad 0; every state.
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    let id = encode_sockid(client, server);
    req[8..8 + SOCKID_LEN].copy_from_slice(&id);
    Ok(out)
}

/// `inet_diag_sockid` for the socket whose local end is `src` and remote end `dst`.
fn encode_sockid(src: SocketAddr, dst: SocketAddr) -> [u8; SOCKID_LEN] {
    let mut id = [0u8; SOCKID_LEN];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    id[4..20].copy_from_slice(&addr_bytes(src.ip()));
    id[20..36].copy_from_slice(&addr_bytes(dst.ip()));
    // interface 0 (any); cookie: none.
    id[40..44].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    id[44..48].copy_from_slice(&NOCOOKIE.to_ne_bytes());
    id
}

/// An address as inet_diag holds it: network order, IPv4 in the first 4 of 16 bytes.
fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn family_of(client: SocketAddr, server: SocketAddr) -> Result<u8, LookupError> {
    match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => Ok(AF_INET),
        (SocketAddr::V6(_), SocketAddr::V6(_)) => Ok(AF_INET6),
        _ => Err(LookupError::MixedFamilies),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The uid in a reply to the request with sequence `seq` for `client` → `server`.
///
/// Walks every message in the datagram: an `inet_diag_msg` whose socket id names the same
/// address pair gives the uid; an error message gives its errno; anything else is skipped.
pub fn decode_reply(
    reply: &[u8],
    client: SocketAddr,
    server: SocketAddr,
    seq: u32,
) -> Result<u32, LookupError> {
    let family = family_of(client, server)?;
    let wanted = encode_sockid(client, server);
    let mut rest = reply;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32_at(rest, 0).ok_or(LookupError::Malformed)? as usize;
        let kind = u16_at(rest, 4).ok_or(LookupError::Malformed)?;
        let msg_seq = u32_at(rest, 8).ok_or(LookupError::Malformed)?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(LookupError::Malformed);
        }
        let payload = &rest[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).ok_or(LookupError::Malformed)? as i32;
                    return Err(LookupError::Kernel(-errno));
                }
                NLMSG_DONE => return Err(LookupError::NotFound),
                SOCK_DIAG_BY_FAMILY => {
                    if payload.len() < DIAG_MSG_LEN || payload[0] != family {
                        return Err(LookupError::Malformed);
                    }
                    // Ports and addresses must be ours; interface and cookie are the kernel's.
                    let id = &payload[4..4 + SOCKID_LEN];
                    if id[..36] != wanted[..36] {
                        return Err(LookupError::Malformed);
                    }
                    return u32_at(payload, DIAG_UID_OFFSET).ok_or(LookupError::Malformed);
                }
                _ => {}
            }
        }
        // Messages are padded to 4 bytes.
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or(&[]);
    }
    Err(LookupError::NotFound)
}

/// [`owner_uid`] through `/proc/net/tcp` (IPv4) and `/proc/net/tcp6` (IPv6, and IPv4 clients
/// on dual-stack sockets), read line by line so memory stays bounded however many sockets
/// there are.
pub fn proc_owner(client: SocketAddr, server: SocketAddr) -> Result<u32, LookupError> {
    let mut last = LookupError::NotFound;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match scan_proc(path, client, server) {
            Ok(uid) => return Ok(uid),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn scan_proc(path: &str, client: SocketAddr, server: SocketAddr) -> Result<u32, LookupError> {
    let file = std::fs::File::open(path).map_err(|e| LookupError::Proc(e.kind()))?;
    find_in_table(std::io::BufReader::new(file), client, server)
}

/// The uid of the socket whose local end is `client` and remote end `server` in a
/// `/proc/net/tcp`-format table.
pub fn find_in_table(
    table: impl BufRead,
    client: SocketAddr,
    server: SocketAddr,
) -> Result<u32, LookupError> {
    let (client, server) = (canonical(client), canonical(server));
    for line in table.lines() {
        let line = line.map_err(|e| LookupError::Proc(e.kind()))?;
        if let Some((local, remote, uid)) = parse_table_line(&line) {
            if canonical(local) == client && canonical(remote) == server {
                return Ok(uid);
            }
        }
    }
    Err(LookupError::NotFound)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One row: `sl local rem st tx:rx tr:when retrnsmt uid ...` → (local, remote, uid).
/// `None` for the header line and anything else that does not parse.
pub fn parse_table_line(line: &str) -> Option<(SocketAddr, SocketAddr, u32)> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let local = parse_table_addr(fields.next()?)?;
    let remote = parse_table_addr(fields.next()?)?;
    let uid = fields.nth(4)?.parse().ok()?;
    Some((local, remote, uid))
}

/// `HEX:PORT`, where the address is the kernel's in-memory (network order) bytes printed as
/// native-endian 32-bit words: 8 hex digits for IPv4, 32 for IPv6.
fn parse_table_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// uid → passwd name, looked up once per uid (a passwd lookup may read files or ask NSS,
/// which is too slow to do per request). Bounded: past [`NAME_CACHE_MAX`] uids a name is
/// looked up each time instead of kept.
#[derive(Debug, Default)]
pub struct NameCache {
    names: Mutex<HashMap<u32, Option<Arc<str>>>>,
}

// === impl NameCache ===

impl NameCache {
    /// The caller with owner `uid`, its name resolved (or taken from the cache).
    pub fn caller(&self, uid: u32) -> Caller {
        if let Ok(names) = self.names.lock() {
            if let Some(name) = names.get(&uid) {
                return Caller {
                    uid,
                    name: name.clone(),
                };
            }
        }
        let name: Option<Arc<str>> = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| Arc::from(u.name.as_str()));
        if let Ok(mut names) = self.names.lock() {
            if names.len() < NAME_CACHE_MAX {
                names.insert(uid, name.clone());
            }
        }
        Caller { uid, name }
    }
}

/// The caller of the connection `client` → `server`, or why it could not be determined.
pub fn identify(
    client: SocketAddr,
    server: SocketAddr,
    names: &NameCache,
) -> Result<Caller, LookupError> {
    owner_uid(client, server).map(|uid| names.caller(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn request_bytes_match_the_kernel_layout() {
        let client = v4("127.0.0.1:40000");
        let server = v4("127.0.0.2:8080");
        let bytes = encode_request(client, server, 7).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&72u32.to_ne_bytes());
        expected.extend_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
        expected.extend_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST
        expected.extend_from_slice(&7u32.to_ne_bytes());
        expected.extend_from_slice(&0u32.to_ne_bytes());
        expected.extend_from_slice(&[2, 6, 0, 0]); // AF_INET, TCP, no ext, pad
        expected.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
        expected.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]); // ports 40000, 8080 big-endian
        expected.extend_from_slice(&[127, 0, 0, 1]);
        expected.extend_from_slice(&[0; 12]);
        expected.extend_from_slice(&[127, 0, 0, 2]);
        expected.extend_from_slice(&[0; 12]);
        expected.extend_from_slice(&[0; 4]); // any interface
        expected.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE twice
        assert_eq!(bytes.to_vec(), expected);
    }

    #[test]
    fn ipv6_request_carries_all_sixteen_bytes_and_mixed_families_are_refused() {
        let client: SocketAddr = "[::1]:1".parse().unwrap();
        let server: SocketAddr = "[fe80::2]:2".parse().unwrap();
        let bytes = encode_request(client, server, 1).unwrap();
        assert_eq!(bytes[16], 10); // AF_INET6
        assert_eq!(&bytes[28..44], &"::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            &bytes[44..60],
            &"fe80::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(
            encode_request(client, v4("127.0.0.1:2"), 1),
            Err(LookupError::MixedFamilies)
        );
    }

    /// A reply as the kernel builds it: nlmsghdr + inet_diag_msg for the request's socket.
    fn diag_reply(client: SocketAddr, server: SocketAddr, seq: u32, uid: u32) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&88u32.to_ne_bytes());
        msg.extend_from_slice(&20u16.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&4242u32.to_ne_bytes());
        msg.extend_from_slice(&[2, 1, 0, 0]); // AF_INET, TCP_ESTABLISHED
        let mut id = encode_sockid(client, server);
        id[40..48].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // a real cookie
        msg.extend_from_slice(&id);
        msg.extend_from_slice(&[0; 12]); // expires, rqueue, wqueue
        msg.extend_from_slice(&uid.to_ne_bytes());
        msg.extend_from_slice(&987654u32.to_ne_bytes()); // inode
        assert_eq!(msg.len(), 88);
        msg
    }

    #[test]
    fn reply_gives_the_uid_of_the_named_socket() {
        let (c, s) = (v4("127.0.0.1:40000"), v4("127.0.0.1:8080"));
        assert_eq!(decode_reply(&diag_reply(c, s, 3, 1001), c, s, 3), Ok(1001));
    }

    #[test]
    fn reply_for_another_socket_or_sequence_is_not_believed() {
        let (c, s) = (v4("127.0.0.1:40000"), v4("127.0.0.1:8080"));
        let other = v4("127.0.0.1:40001");
        assert_eq!(
            decode_reply(&diag_reply(other, s, 3, 0), c, s, 3),
            Err(LookupError::Malformed)
        );
        assert_eq!(
            decode_reply(&diag_reply(c, s, 4, 0), c, s, 3),
            Err(LookupError::NotFound)
        );
    }

    #[test]
    fn error_reply_gives_the_errno_and_truncation_is_malformed() {
        let (c, s) = (v4("127.0.0.1:40000"), v4("127.0.0.1:8080"));
        let mut msg = Vec::new();
        msg.extend_from_slice(&92u32.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&3u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&(-2i32).to_ne_bytes()); // -ENOENT
        msg.extend_from_slice(&encode_request(c, s, 3).unwrap());
        assert_eq!(decode_reply(&msg, c, s, 3), Err(LookupError::Kernel(2)));
        let full = diag_reply(c, s, 3, 5);
        assert_eq!(
            decode_reply(&full[..60], c, s, 3),
            Err(LookupError::Malformed)
        );
        assert_eq!(decode_reply(&[], c, s, 3), Err(LookupError::NotFound));
    }

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 22222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 33333 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn proc_table_finds_the_clients_end_not_ours() {
        let (c, s) = (v4("127.0.0.1:40000"), v4("127.0.0.1:8080"));
        assert_eq!(find_in_table(TCP.as_bytes(), c, s), Ok(1001));
        // Seen from the other side, the same pair is the server's own socket.
        assert_eq!(find_in_table(TCP.as_bytes(), s, c), Ok(0));
        assert_eq!(
            find_in_table(TCP.as_bytes(), v4("127.0.0.1:40001"), s),
            Err(LookupError::NotFound)
        );
        assert_eq!(parse_table_line(TCP.lines().next().unwrap()), None);
    }

    #[test]
    fn proc_tcp6_rows_parse_including_v4_mapped_clients() {
        // ::ffff:127.0.0.1 port 40000 → 127.0.0.1 port 8080, and ::1.
        let table = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1002        0 1 1 0 20 4 30 10 -1
   1: 00000000000000000000000001000000:9C41 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  1003        0 1 1 0 20 4 30 10 -1
";
        if cfg!(target_endian = "little") {
            let s = v4("127.0.0.1:8080");
            assert_eq!(
                find_in_table(table.as_bytes(), v4("127.0.0.1:40000"), s),
                Ok(1002)
            );
            let c6: SocketAddr = "[::1]:40001".parse().unwrap();
            let s6: SocketAddr = "[::1]:8080".parse().unwrap();
            assert_eq!(find_in_table(table.as_bytes(), c6, s6), Ok(1003));
        }
    }

    /// The real kernel, both ways: a connection made by this process is owned by our uid.
    #[test]
    fn live_lookup_finds_our_own_uid_both_ways() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(netlink_owner(peer, local), Ok(me));
        assert_eq!(proc_owner(peer, local), Ok(me));
        drop(client);
        drop(accepted);
        let cache = NameCache::default();
        assert_eq!(cache.caller(me).uid, me);
        assert_eq!(cache.caller(me), cache.caller(me));
    }

    /// Cost per connection, printed (not asserted: the machine is shared).
    #[test]
    fn lookup_cost_per_connection_is_measured() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        const N: u32 = 2000;
        let start = tokio::time::Instant::now();
        for _ in 0..N {
            netlink_owner(peer, local).unwrap();
        }
        let netlink = start.elapsed() / N;
        let start = tokio::time::Instant::now();
        for _ in 0..200 {
            proc_owner(peer, local).unwrap();
        }
        let proc = start.elapsed() / 200;
        eprintln!("peer lookup per connection: sock_diag {netlink:?}, /proc/net/tcp {proc:?}");
        drop(client);
    }
}
