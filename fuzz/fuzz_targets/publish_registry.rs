#![no_main]
//! `zurg::fuzz::Target::PublishRegistry`: see that harness for what it checks.

use libfuzzer_sys::fuzz_target;
use zurg::fuzz::Target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = Target::PublishRegistry.run(data) {
        panic!("{violation}");
    }
});
