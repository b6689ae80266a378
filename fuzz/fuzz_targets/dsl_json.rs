#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cairn_fuzz::load_definition(data, cairn_core::dsl::SourceFormat::Json);
});
