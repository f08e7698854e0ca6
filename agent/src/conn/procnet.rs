//! Socket addresses from procfs: `/proc/PID/fd/N -> socket:[INODE]` and the
//! `/proc/PID/net/tcp{,6}` tables (in the process's own network namespace).
//!
//! Used off the hot path only: once per listening socket (its local address gives
//! server.port for every connection accepted from it) and for sockets that existed
//! before the agent attached. Tracepoints cannot see local addresses without reading
//! kernel structs, which this kernel gives us no portable way to do (no kprobes/fentry).

use std::{
    collections::HashSet,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const TCP_LISTEN: u8 = 0x0A;

/// One row of /proc/net/tcp{,6}.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

pub fn fd_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    socket_inode(&link.to_string_lossy())
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        // The kernel prints each 32-bit word in host byte order.
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses the text of /proc/net/tcp or tcp6.
pub fn parse_table(text: &str) -> Vec<TcpRow> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _sl = f.next()?;
            let local = parse_addr(f.next()?)?;
            let remote = parse_addr(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            let inode = f.nth(5)?.parse().ok()?;
            Some(TcpRow {
                local,
                remote,
                state,
                inode,
            })
        })
        .collect()
}

pub fn tcp_rows(pid: u32) -> Vec<TcpRow> {
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            rows.extend(parse_table(&text));
        }
    }
    rows
}

/// Local addresses of the process namespace's listening TCP sockets.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    tcp_rows(pid)
        .into_iter()
        .filter(|r| r.state == TCP_LISTEN)
        .map(|r| r.local)
        .collect()
}

/// Inodes of the process namespace's TCP sockets that are not listening.
pub fn connected_inodes(pid: u32) -> HashSet<u64> {
    tcp_rows(pid)
        .into_iter()
        .filter(|r| r.state != TCP_LISTEN)
        .map(|r| r.inode)
        .collect()
}

/// Local and remote address of the socket behind `pid`'s `fd`.
pub fn fd_addrs(pid: u32, fd: u32) -> Option<TcpRow> {
    let inode = fd_inode(pid, fd)?;
    tcp_rows(pid).into_iter().find(|r| r.inode == inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_rows() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let rows = parse_table(v4);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(rows[0].remote, "127.0.0.1:54321".parse().unwrap());
        assert_eq!(rows[0].state, 1);
        assert_eq!(rows[0].inode, 4242);

        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:0050 0000000000000000FFFF00000100007F:9C40 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let rows = parse_table(v6);
        assert_eq!(rows[0].local, "[::1]:80".parse().unwrap());
        // v4-mapped addresses come back as plain IPv4.
        assert_eq!(rows[0].remote, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
