//! The `boardcast` binary: the service (the default), or one of its tools.
//!
//! - `boardcast` or `boardcast serve`: configuration, logging, then the application until a
//!   signal.
//! - `boardcast token --user ID ...`: prints a token signed with the configured key.
//! - `boardcast backup PATH`: copies the embedded mode's database while the service runs.

use boardcast::auth::Role;
use boardcast::backup;
use boardcast::config::Config;
use boardcast::startup::Application;
use boardcast::token::{make_token, TokenRequest};
use clap::{Parser, Subcommand, ValueEnum};

/// A realtime board service. Configured by environment variables (see README.md).
#[derive(Parser)]
#[command(name = "boardcast", version)]
struct Cli {
    /// What to do; the service when absent.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service (the default).
    Serve,
    /// Prints a token signed with the service's key (JWT_SECRET, or --private-key with
    /// JWT_PUBLIC_KEY and JWT_ALGORITHM), with JWT_AUDIENCE and JWT_ISSUER when set.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// The name others see.
        #[arg(long)]
        name: Option<String>,
        /// What the holder may do.
        #[arg(long, value_enum, default_value = "editor")]
        role: RoleArg,
        /// The tenant (1-64 characters of A-Z a-z 0-9 _ -); `default` when absent.
        #[arg(long)]
        tenant: Option<String>,
        /// The only boards the token may join, comma-separated.
        #[arg(long, value_delimiter = ',')]
        boards: Option<Vec<String>>,
        /// Lifetime in seconds (at most 30 days).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// A PEM private key, for a service that verifies with JWT_PUBLIC_KEY.
        #[arg(long)]
        private_key: Option<String>,
    },
    /// Copies a consistent snapshot of the database in DATA_DIR to a new file PATH, while the
    /// service runs. To restore: stop the service, put the copy in DATA_DIR as boardcast.db
    /// (removing boardcast.db-wal and boardcast.db-shm), start it.
    Backup {
        /// The new file to write.
        path: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Editor,
    Viewer,
    Server,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Editor => Role::Editor,
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Server => Role::Server,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None | Some(Command::Serve) => serve(),
        Some(Command::Backup { path }) => {
            let done = Config::from_env()
                .map_err(|e| e.to_string())
                .and_then(|config| backup(&config.data_dir, &path).map_err(|e| e.to_string()));
            match done {
                Ok(()) => {
                    eprintln!("boardcast backup: wrote {path}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("boardcast backup: {e}");
                    std::process::ExitCode::from(2)
                }
            }
        }
        Some(Command::Token {
            user,
            name,
            role,
            tenant,
            boards,
            ttl,
            private_key,
        }) => {
            let request = TokenRequest {
                user,
                name,
                role: role.into(),
                tenant,
                boards,
                ttl,
                private_key,
            };
            let made = Config::from_env()
                .map_err(|e| e.to_string())
                .and_then(|config| make_token(&config, &request).map_err(|e| e.to_string()));
            match made {
                Ok(token) => {
                    println!("{token}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("boardcast token: {e}");
                    std::process::ExitCode::from(2)
                }
            }
        }
    }
}

#[actix_web::main]
async fn serve() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            log::error!("configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("start-up: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    log::info!("boardcast listening on port {}", app.port());
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Messages cross threads at every actor hop: glibc's allocator spent a tenth of the server's
/// CPU on them (see README.md, "How it is built"). Built with `no_thp`: huge pages made its
/// arenas resident 2 MiB at a time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
