//! Loads Headroom's kernel programs, attaches them at the cgroup v2 root and reads
//! their maps. Dropping [`Probes`] detaches everything (the attachments are bpf links
//! owned by this process, so they also go away if it dies).
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, TracePoint,
    },
};
use collector_ebpf::{
    EndpointKey, EndpointKind, EndpointValue, ExecPath, MapOp, PORT_HALF_WORDS, SocketInfo,
    TrafficCounters, TrafficKey, map, program,
};

use crate::error::{Error, Result};

/// Loads and attaches the exec tracepoint. Not fatal when it fails: measuring goes on
/// and only short-lived processes lose their executable's name.
fn attach_exec(ebpf: &mut Ebpf) -> Result<()> {
    let name = program::EXEC;
    let (category, event) = program::EXEC_TRACEPOINT;
    let prog: &mut TracePoint = program_mut(ebpf, name)?;
    prog.load()
        .map_err(|source| Error::Program { name, source })?;
    prog.attach(category, event)
        .map_err(|source| Error::Program { name, source })?;
    Ok(())
}

/// The kernel object built by build.rs from collector-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/headroom"));

/// Loaded and attached kernel programs.
pub struct Probes {
    ebpf: Ebpf,
    cgroup_root: PathBuf,
    /// The LRU maps' capacities as the kernel created them (fixed once loaded).
    capacities: BTreeMap<&'static str, u32>,
    /// Why the exec tracepoint is not attached, if it is not: processes are then named
    /// from /proc and their comm only (a short-lived one by its sending thread's name).
    exec_unavailable: Option<String>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("cgroup_root", &self.cgroup_root)
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// Loads the programs and attaches them to the cgroup v2 hierarchy at `cgroup_root`.
    pub fn attach(cgroup_root: &Path) -> Result<Self> {
        Self::attach_sized(cgroup_root, &[])
    }

    /// [`Probes::attach`] with some maps given other capacities than `capacity`'s
    /// (e.g. a test that fills a map to see its evictions counted).
    pub fn attach_sized(cgroup_root: &Path, capacities: &[(&'static str, u32)]) -> Result<Self> {
        raise_memlock_limit();
        // No kernel BTF: the programs read no kernel structs, so the object has no CO-RE
        // relocations to resolve against it, and parsing /sys/kernel/btf/vmlinux (5 MiB
        // and more) would cost ~10 MiB of heap at start, the collector's peak RSS.
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        for &(name, entries) in capacities {
            loader.map_max_entries(name, entries);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|source| {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            if uid != 0 {
                Error::NotPrivileged { uid, source }
            } else {
                Error::Load(source)
            }
        })?;
        let root = File::open(cgroup_root).map_err(|source| Error::OpenCgroup {
            path: cgroup_root.into(),
            source,
        })?;
        // bpf links to a cgroup always coexist with other programs there (systemd's, other
        // tools'); "Single" only means no legacy override flags.
        for name in [
            program::CONNECT4,
            program::CONNECT6,
            program::SENDMSG4,
            program::SENDMSG6,
        ] {
            let prog: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| Error::Program { name, source })?;
            prog.attach(&root, CgroupAttachMode::Single)
                .map_err(|source| Error::Program { name, source })?;
        }
        let name = program::SOCK_RELEASE;
        let prog: &mut CgroupSock = program_mut(&mut ebpf, name)?;
        prog.load()
            .map_err(|source| Error::Program { name, source })?;
        prog.attach(&root, CgroupAttachMode::Single)
            .map_err(|source| Error::Program { name, source })?;
        for (name, attach_type) in [
            (program::SKB_EGRESS, CgroupSkbAttachType::Egress),
            (program::SKB_INGRESS, CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = program_mut(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| Error::Program { name, source })?;
            prog.attach(&root, attach_type, CgroupAttachMode::Single)
                .map_err(|source| Error::Program { name, source })?;
        }
        let exec_unavailable = attach_exec(&mut ebpf).err().map(|e| e.to_string());
        let capacities = [map::TRAFFIC, map::SOCKETS, map::CLOSING]
            .into_iter()
            .map(|name| Ok((name, loaded_capacity(&ebpf, name)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            ebpf,
            cgroup_root: cgroup_root.into(),
            capacities,
            exec_unavailable,
        })
    }

    /// Why processes cannot be named by the executable the exec tracepoint saw, if so
    /// (no tracefs, or no permission to attach a tracepoint).
    pub fn exec_unavailable(&self) -> Option<&str> {
        self.exec_unavailable.as_deref()
    }

    /// The executable process `tgid` last ran, as the exec tracepoint recorded it.
    pub fn exec_path(&self, tgid: u32) -> Option<String> {
        let map = self.ebpf.map(map::EXEC_PATHS)?;
        let paths: HashMap<&MapData, u32, ExecPath> = HashMap::try_from(map).ok()?;
        let exec = paths.get(&tgid, 0).ok()?;
        let len = exec.path.iter().position(|&b| b == 0)?;
        String::from_utf8(exec.path[..len].to_vec()).ok()
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// Adds an endpoint to measure.
    pub fn add_endpoint(&mut self, key: EndpointKey, kind: EndpointKind) -> Result<()> {
        let name = map::ENDPOINTS;
        let mut endpoints: HashMap<&mut MapData, EndpointKey, EndpointValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        endpoints
            .insert(key, EndpointValue { kind: kind as u32 }, 0)
            .map_err(|source| Error::Map { name, source })?;
        // Then the port's bit, which lets packets reach the endpoint lookup at all.
        self.set_port_bit(key.port, true)?;
        if key.is_any_address() {
            self.set_port_bit_in(PORT_HALF_WORDS, key.port, true)?;
        }
        Ok(())
    }

    /// Stops measuring an endpoint: removes its entry, then clears its port's bit
    /// unless another endpoint still uses that port. Removing one that is not there
    /// is not an error.
    pub fn remove_endpoint(&mut self, key: EndpointKey) -> Result<()> {
        let name = map::ENDPOINTS;
        let mut endpoints: HashMap<&mut MapData, EndpointKey, EndpointValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        match endpoints.remove(&key) {
            Ok(()) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(source) => return Err(Error::Map { name, source }),
        }
        if key.is_any_address() {
            self.set_port_bit_in(PORT_HALF_WORDS, key.port, false)?;
        }
        let name = map::ENDPOINTS;
        let endpoints: HashMap<&mut MapData, EndpointKey, EndpointValue> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        let mut port_in_use = false;
        for other in endpoints.keys() {
            let other = other.map_err(|source| Error::Map { name, source })?;
            port_in_use |= other.port == key.port;
        }
        if port_in_use {
            return Ok(());
        }
        self.set_port_bit(key.port, false)
    }

    /// Sets or clears `port`'s bit in the PORTS bitmap.
    fn set_port_bit(&mut self, port: u16, on: bool) -> Result<()> {
        self.set_port_bit_in(0, port, on)
    }

    /// Sets or clears `port`'s bit in the half of the PORTS bitmap starting at `half`.
    fn set_port_bit_in(&mut self, half: u32, port: u16, on: bool) -> Result<()> {
        let name = map::PORTS;
        let mut ports: Array<&mut MapData, u64> =
            Array::try_from(self.ebpf.map_mut(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        let word = half + u32::from(port >> 6);
        let bit = 1u64 << (port & 63);
        let bits = ports
            .get(&word, 0)
            .map_err(|source| Error::Map { name, source })?;
        let bits = if on { bits | bit } else { bits & !bit };
        ports
            .set(word, bits, 0)
            .map_err(|source| Error::Map { name, source })
    }

    /// Takes the events ring buffer (once) for a reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let name = map::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(Error::MapNotFound { name })?;
        RingBuf::try_from(map).map_err(|source| Error::Map { name, source })
    }

    /// The loaded object, for program statistics and benchmarks.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded programs, for their run-time statistics.
    pub fn programs(&self) -> impl Iterator<Item = (&str, &aya::programs::Program)> {
        self.ebpf.programs()
    }

    /// Traffic per (cgroup, endpoint kind, process), summed over CPUs.
    pub fn traffic(&self) -> Result<BTreeMap<TrafficKey, TrafficCounters>> {
        let name = map::TRAFFIC;
        let traffic: PerCpuHashMap<&MapData, TrafficKey, TrafficCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        let mut out = BTreeMap::new();
        for entry in traffic.iter() {
            let (key, per_cpu) = entry.map_err(|source| Error::Map { name, source })?;
            let total: &mut TrafficCounters = out.entry(key).or_default();
            for counters in per_cpu.iter() {
                total.accumulate(counters);
            }
        }
        Ok(out)
    }

    /// Deletes a `TRAFFIC` key (of a cgroup whose series are retired); `false` when it
    /// was not there (the kernel evicted it first).
    pub fn remove_traffic(&mut self, key: &TrafficKey) -> Result<bool> {
        let name = map::TRAFFIC;
        let mut traffic: PerCpuHashMap<&mut MapData, TrafficKey, TrafficCounters> =
            PerCpuHashMap::try_from(self.ebpf.map_mut(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        match traffic.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(source) => Err(Error::Map { name, source }),
        }
    }

    /// What the programs did to the LRU maps, by [`collector_ebpf::MapOp`] index, summed
    /// over CPUs.
    pub fn map_ops(&self) -> Result<MapOps> {
        let name = map::MAP_OPS;
        let ops: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        let mut out = [0; MapOp::COUNT as usize];
        for (i, slot) in (0..MapOp::COUNT).zip(out.iter_mut()) {
            *slot = ops
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .map_err(|source| Error::Map { name, source })?;
        }
        Ok(MapOps(out))
    }

    /// Entries in the socket map `name` ([`map::SOCKETS`] or [`map::CLOSING`]) now; one
    /// system call per entry, so its cost follows the sockets measured, not the capacity.
    pub fn socket_entries(&self, name: &'static str) -> Result<u64> {
        let sockets: HashMap<&MapData, u64, SocketInfo> =
            HashMap::try_from(self.ebpf.map(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        let mut n = 0;
        for key in sockets.keys() {
            key.map_err(|source| Error::Map { name, source })?;
            n += 1;
        }
        Ok(n)
    }

    /// The capacity the LRU map `name` ([`map::TRAFFIC`], [`map::SOCKETS`] or
    /// [`map::CLOSING`]) was created with, as the kernel reported it at attach.
    pub fn capacity(&self, name: &'static str) -> Result<u32> {
        self.capacities
            .get(name)
            .copied()
            .ok_or(Error::MapNotFound { name })
    }

    /// Events the kernel programs could not record, by [`collector_ebpf::Drop`] index.
    pub fn drops(&self) -> Result<Vec<u64>> {
        let name = map::DROPS;
        let drops: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(name).ok_or(Error::MapNotFound { name })?)
                .map_err(|source| Error::Map { name, source })?;
        (0..collector_ebpf::Drop::COUNT)
            .map(|i| {
                drops
                    .get(&i, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .map_err(|source| Error::Map { name, source })
            })
            .collect()
    }
}

/// The `MAP_OPS` counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOps(pub [u64; MapOp::COUNT as usize]);

impl MapOps {
    pub fn get(&self, op: MapOp) -> u64 {
        self.0[op as usize]
    }
}

/// The capacity the kernel gave the loaded hash map `name`.
fn loaded_capacity(ebpf: &Ebpf, name: &'static str) -> Result<u32> {
    let map = ebpf.map(name).ok_or(Error::MapNotFound { name })?;
    let data: &MapData = match map {
        aya::maps::Map::HashMap(d)
        | aya::maps::Map::LruHashMap(d)
        | aya::maps::Map::PerCpuHashMap(d)
        | aya::maps::Map::PerCpuLruHashMap(d) => d,
        _ => return Err(Error::MapNotFound { name }),
    };
    data.info()
        .map(|info| info.max_entries())
        .map_err(|source| Error::Map { name, source })
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(Error::ProgramNotFound { name })?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so loading does not
/// fail there. Newer kernels ignore it.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass; failure is harmless here.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
}

#[cfg(test)]
mod tests {
    use super::OBJECT;

    fn u16_at(bytes: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
    }

    fn u32_at(bytes: &[u8], at: usize) -> usize {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    fn u64_at(bytes: &[u8], at: usize) -> usize {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize
    }

    /// `Probes::attach` loads the object without the kernel's BTF, which is only right
    /// while the object has no CO-RE relocations (they would be left unresolved).
    #[test]
    fn the_kernel_object_has_no_core_relocations() {
        // ELF64: section headers at e_shoff, e_shentsize/e_shnum/e_shstrndx after it.
        let (shoff, shentsize) = (u64_at(OBJECT, 0x28), u16_at(OBJECT, 0x3a));
        let (shnum, shstrndx) = (u16_at(OBJECT, 0x3c), u16_at(OBJECT, 0x3e));
        let section = |i: usize| {
            let h = shoff + i * shentsize;
            // sh_name, sh_offset and sh_size of section i.
            (
                u32_at(OBJECT, h),
                u64_at(OBJECT, h + 0x18),
                u64_at(OBJECT, h + 0x20),
            )
        };
        let names = section(shstrndx).1;
        let name_of = |at: usize| {
            let start = names + at;
            let end = OBJECT[start..].iter().position(|&b| b == 0).expect("NUL") + start;
            &OBJECT[start..end]
        };
        let (_, ext, _) = (0..shnum)
            .map(section)
            .find(|(name, _, _)| name_of(*name) == b".BTF.ext")
            .expect("the object has a .BTF.ext section");
        // btf_ext_header: magic, version, flags, hdr_len, then offset/length pairs of
        // func_info, line_info and (when hdr_len ≥ 32) core_relo.
        assert_eq!(u16_at(OBJECT, ext), 0xeb9f, "BTF magic");
        let header_len = u32_at(OBJECT, ext + 4);
        let core_relo_len = if header_len >= 32 {
            u32_at(OBJECT, ext + 28)
        } else {
            0
        };
        assert_eq!(core_relo_len, 0, "CO-RE relocations need the kernel's BTF");
    }
}
