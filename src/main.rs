//! The `blobpipe` binary: parse arguments, run, map the outcome to an exit code.

use clap::Parser;

fn main() {
    // One TLS provider for every HTTP client in the process (Azure SDK, webhooks).
    blobpipe::store::azure::client::ensure_tls_provider();
    let cli = blobpipe::cli::Cli::parse();
    blobpipe::cli::init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(blobpipe::cli::exit::FAILED);
        }
    };
    let code = rt.block_on(blobpipe::cli::run(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
