//! Fuzzes the pure steps of the handler, from Lambda payload bytes to a
//! validated request, and checks the properties of every outcome.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    // Inputs that are not JSON never reach the handler, so they are kept out
    // of the corpus, where they would only be mutated into more of the same.
    match delete_learning_user_fuzz::check_input(data) {
        Some(_) => Corpus::Keep,
        None => Corpus::Reject,
    }
});
