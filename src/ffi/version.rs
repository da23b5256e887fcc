//! The library's version, at compile time (`DW_VERSION_*` in the header) and at run time
//! (`dw_version()`), both tied to Cargo.toml: the build fails if they disagree.

use std::ffi::{c_char, CStr};

/// The major version of the header (Cargo.toml `version`). Compare with `dw_version()` to check
/// that the library linked at run time is the one the program was compiled against.
pub const DW_VERSION_MAJOR: u32 = 0;
/// The minor version of the header.
pub const DW_VERSION_MINOR: u32 = 1;
/// The patch version of the header.
pub const DW_VERSION_PATCH: u32 = 0;
/// The header's version as one comparable number, MAJOR * 10000 + MINOR * 100 + PATCH (0.1.0 is
/// 100), for `#if DW_VERSION_NUMBER >= …` and for comparing with `dw_version_number()` at run time.
pub const DW_VERSION_NUMBER: u32 = 100;

const fn parse_decimal(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n: u32 = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "version component is not a number");
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

// cbindgen needs literals above; these keep them equal to Cargo.toml.
const _: () = {
    assert!(DW_VERSION_MAJOR == parse_decimal(env!("CARGO_PKG_VERSION_MAJOR")), "update DW_VERSION_MAJOR");
    assert!(DW_VERSION_MINOR == parse_decimal(env!("CARGO_PKG_VERSION_MINOR")), "update DW_VERSION_MINOR");
    assert!(DW_VERSION_PATCH == parse_decimal(env!("CARGO_PKG_VERSION_PATCH")), "update DW_VERSION_PATCH");
    assert!(DW_VERSION_MINOR < 100 && DW_VERSION_PATCH < 100, "DW_VERSION_NUMBER needs another encoding");
    assert!(
        DW_VERSION_NUMBER == DW_VERSION_MAJOR * 10000 + DW_VERSION_MINOR * 100 + DW_VERSION_PATCH,
        "update DW_VERSION_NUMBER"
    );
};

const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("the package version holds a NUL byte"),
};

/// The version of the library linked at run time, as "MAJOR.MINOR.PATCH" (equal to the
/// `DW_VERSION_*` macros of the header it was built with).
///
/// Never NULL. The string is owned by the library and valid for the life of the process: do not
/// free it.
#[no_mangle]
pub extern "C" fn dw_version() -> *const c_char {
    ffi_boundary_infallible!(VERSION.as_ptr(), { VERSION.as_ptr() })
}

/// The version of the library linked at run time as MAJOR * 10000 + MINOR * 100 + PATCH: a
/// program checks `dw_version_number() >= DW_VERSION_NUMBER` (or the same major version,
/// `dw_version_number() / 10000 == DW_VERSION_MAJOR`) without parsing `dw_version()`.
#[no_mangle]
pub extern "C" fn dw_version_number() -> u32 {
    ffi_boundary_infallible!(DW_VERSION_NUMBER, { DW_VERSION_NUMBER })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_version_is_the_macros_and_cargo_toml() {
        let v = unsafe { CStr::from_ptr(dw_version()) }.to_str().unwrap();
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        assert_eq!(v, format!("{DW_VERSION_MAJOR}.{DW_VERSION_MINOR}.{DW_VERSION_PATCH}"));
        let n = dw_version_number();
        assert_eq!(
            (n / 10000, n / 100 % 100, n % 100),
            (DW_VERSION_MAJOR, DW_VERSION_MINOR, DW_VERSION_PATCH)
        );
    }
}
