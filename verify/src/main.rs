//! `trace-verify`: flags -> options -> the library's run; the exit status
//! says how it went (0 as promised, 1 a promise broken, 2 usage or set-up).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(trace_verify::report::EXIT_SETUP)
}
