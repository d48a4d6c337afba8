//! Giving back the page-table entries of zurg's own code after start-up.
//!
//! Loading units runs code the loop never runs again (TOML, the unit
//! checks, the CLI), and the kernel maps file pages 64 KB around every
//! fault, so after start-up most of the binary's text and read-only data is
//! mapped into zurg and counted in its RSS and PSS. `MADV_DONTNEED` over a
//! private file mapping that was never written drops the mappings only: the
//! pages stay in the page cache, and the code the loop still runs comes back
//! by minor faults (no disk read) the next time it runs.
//!
//! Not `MADV_PAGEOUT`: on a file page that only zurg maps it evicts the page
//! from the page cache as well, so the next restart would read the binary
//! from disk again.

use std::io;

/// The address ranges of the running executable's segments that are mapped
/// from the file and never written: its code and its read-only data.
fn read_only_segments() -> Vec<(usize, usize)> {
    let mut found = Found {
        ranges: Vec::new(),
        text_relocations: false,
    };
    // SAFETY: dl_iterate_phdr calls `each` with pointers that are valid for
    // the call, and `found` outlives the iteration (it is not kept).
    unsafe {
        libc::dl_iterate_phdr(Some(each), (&raw mut found).cast());
    }
    if found.text_relocations {
        // The loader wrote relocations into these pages: they are private
        // copies now, and dropping them would bring back unrelocated code.
        return Vec::new();
    }
    found.ranges
}

struct Found {
    ranges: Vec<(usize, usize)>,
    text_relocations: bool,
}

/// dl_iterate_phdr's callback: records the first object (the executable
/// itself) and stops.
unsafe extern "C" fn each(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `Found` that read_only_segments passed, and
    // `info` is valid for this call (dl_iterate_phdr's contract).
    let (found, info) = unsafe { (&mut *data.cast::<Found>(), &*info) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let base = info.dlpi_addr as usize;
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W == 0 && ph.p_memsz > 0 {
            let start = base.wrapping_add(ph.p_vaddr as usize);
            found
                .ranges
                .push((start, start.wrapping_add(ph.p_memsz as usize)));
        } else if ph.p_type == libc::PT_DYNAMIC {
            // SAFETY: the loader has mapped the dynamic section, an array of
            // `Dyn` ending with DT_NULL.
            found.text_relocations = unsafe { has_text_relocations(base, ph) };
        }
    }
    1
}

/// An entry of the dynamic section (Elf64_Dyn; not in the libc crate).
#[repr(C)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

const DT_TEXTREL: i64 = 22;
const DT_FLAGS: i64 = 30;
const DF_TEXTREL: u64 = 0x4;

/// # Safety
/// `ph` is the PT_DYNAMIC header of a loaded object whose load bias is `base`.
unsafe fn has_text_relocations(base: usize, ph: &libc::Elf64_Phdr) -> bool {
    let mut dyn_ptr = base.wrapping_add(ph.p_vaddr as usize) as *const Dyn;
    let count = ph.p_memsz as usize / std::mem::size_of::<Dyn>();
    for _ in 0..count {
        // SAFETY: within the p_memsz bytes of the mapped dynamic section.
        let entry = unsafe { &*dyn_ptr };
        match entry.d_tag {
            0 => break,
            DT_TEXTREL => return true,
            DT_FLAGS if entry.d_val & DF_TEXTREL != 0 => return true,
            _ => {}
        }
        // SAFETY: the next entry is still inside the section (count bound).
        dyn_ptr = unsafe { dyn_ptr.add(1) };
    }
    false
}

/// Drops zurg's mappings of its own code and read-only data; returns how
/// many bytes of address space were advised. Pages come back on use.
pub fn drop_mapped_text() -> io::Result<usize> {
    let page = page_size();
    let mut advised = 0;
    for (start, end) in read_only_segments() {
        // The segment's mapping covers whole pages around it.
        let start = start & !(page - 1);
        let end = end.saturating_add(page - 1) & !(page - 1);
        // SAFETY: [start, end) is a mapping of the executable's own file
        // that is never written (no PF_W, no text relocations), so it holds
        // no private copies: MADV_DONTNEED only unmaps pages, and the next
        // access maps the same bytes back from the page cache. Code running
        // in the range (this function included) faults its page back in.
        let ret =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        super::cvt(ret)?;
        advised += end - start;
    }
    Ok(advised)
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_code_and_keeps_running_after_dropping_it() {
        let segments = read_only_segments();
        let here = finds_its_own_code_and_keeps_running_after_dropping_it as *const () as usize;
        assert!(
            segments.iter().any(|&(s, e)| (s..e).contains(&here)),
            "no read-only segment holds this test's code: {segments:x?}"
        );
        assert!(drop_mapped_text().unwrap_or(0) > 0);
        // The code dropped includes read_only_segments; it maps back in.
        assert_eq!(read_only_segments(), segments);
    }
}
