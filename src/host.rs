//! This host's identity, shared by the transports and the PeerAgent: two processes can
//! share memory and attach to each other only on the same running kernel, so the
//! identity is the boot id plus the host name.

/// `{boot id}/{host name}`.
pub fn identity() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{}/{}", boot.trim(), name())
}

/// The host name (`gethostname`), empty if it cannot be read.
pub fn name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf, which outlives the call.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return String::new();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn identity_is_boot_id_and_name() {
        let id = super::identity();
        let (boot, name) = id.split_once('/').expect("boot id / host name");
        assert_eq!(name, super::name());
        assert_eq!(boot.len(), 36, "boot id {boot:?}");
    }
}
