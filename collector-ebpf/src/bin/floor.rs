//! Empty programs of the same types as the collector's packet and send hooks. `cargo
//! xtask bench` attaches them beside the real ones (their run time per packet is the
//! floor the real programs are measured against) and alone (what any program at these
//! hooks costs DNS throughput). Never loaded by the collector itself.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{cgroup_skb, cgroup_sock_addr},
        programs::{SkBuffContext, SockAddrContext},
    };

    #[cgroup_skb(egress)]
    pub fn floor_skb_egress(_ctx: SkBuffContext) -> i32 {
        1
    }

    #[cgroup_skb(ingress)]
    pub fn floor_skb_ingress(_ctx: SkBuffContext) -> i32 {
        1
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn floor_sendmsg4(_ctx: SockAddrContext) -> i32 {
        1
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn floor_sendmsg6(_ctx: SockAddrContext) -> i32 {
        1
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
