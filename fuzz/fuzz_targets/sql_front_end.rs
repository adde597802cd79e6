//! Arbitrary text through the whole SQL front end: classify, plan at
//! three ε, arrange, noise and post-process. Nothing may panic, overflow
//! the stack or hang (libFuzzer's -timeout catches the last).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static CONFIG: dpgate_config::Config = common::config();
    }
    let sql = String::from_utf8_lossy(data);
    CONFIG.with(|c| common::front_end(&sql, c));
});
