//! The `blobpipe` binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

/// Cap glibc's malloc arenas: with one arena per thread, freed block buffers stay
/// mapped in many arenas and peak RSS grows with the thread count, not the data.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: `mallopt` only changes an allocator tuning parameter; it is called first
    // thing in `main`, before any other thread exists, and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() {
    limit_malloc_arenas();
    // One TLS provider for every HTTP client in the process (Azure SDK, webhooks).
    blobpipe::support::http::ensure_tls_provider();
    let cli = blobpipe::cli::args::Cli::parse();
    blobpipe::cli::logging::init_logging(cli.log_format, cli.quiet, cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            blobpipe::support::out::err_line(format_args!(
                "error: cannot start the async runtime: {e}"
            ));
            std::process::exit(blobpipe::cli::exit::FAILED);
        }
    };
    let code = rt.block_on(blobpipe::cli::run(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
