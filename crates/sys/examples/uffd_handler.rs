//! A standalone page-fault handler for `mem_backend { backend_type: "Uffd" }`, usable with
//! squib or Firecracker: `uffd_handler <socket path> <memory file>`. Serves one VMM until it
//! exits, then prints what it did.

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    {
        let args: Vec<String> = std::env::args().collect();
        if args.len() != 3 {
            eprintln!("usage: {} <socket path> <memory file>", args[0]);
            return std::process::ExitCode::from(2);
        }
        let _ = std::fs::remove_file(&args[1]);
        let run = || -> std::io::Result<squib_sys::uffd_handler::HandlerStats> {
            let listener = std::os::unix::net::UnixListener::bind(&args[1])?;
            let file = std::fs::File::open(&args[2])?;
            squib_sys::uffd_handler::serve(&listener, &file)
        };
        match run() {
            Ok(stats) => {
                println!(
                    "served {} pages, {} remove events, {} regions",
                    stats.pages_served,
                    stats.removes,
                    stats.mappings.len()
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("uffd_handler: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("userfaultfd is Linux-only");
        std::process::ExitCode::FAILURE
    }
}
