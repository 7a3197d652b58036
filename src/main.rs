//! The `boardcast` binary: configuration, logging, then the application until a signal.

use boardcast::config::Config;
use boardcast::startup::Application;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
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
