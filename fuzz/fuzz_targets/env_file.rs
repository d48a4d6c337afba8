#![no_main]
//! `zurg::fuzz::Target::EnvFile`: see that harness for what it checks.

use libfuzzer_sys::fuzz_target;
use zurg::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = Target::EnvFile.run(data) {
        panic!("{violation}");
    }
});
