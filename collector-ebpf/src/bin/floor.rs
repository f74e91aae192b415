//! Empty programs of the same types as the collector's packet hooks. `cargo xtask bench`
//! attaches them beside the real ones: their run time per packet is the floor the real
//! programs are measured against. Never loaded by the collector itself.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

    #[cgroup_skb(egress)]
    pub fn floor_skb_egress(_ctx: SkBuffContext) -> i32 {
        1
    }

    #[cgroup_skb(ingress)]
    pub fn floor_skb_ingress(_ctx: SkBuffContext) -> i32 {
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
