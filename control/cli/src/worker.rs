//! `ember worker …`: the operator's [`WorkerCommand`] (join tokens, listing and revoking
//! workers), run locally on a control data directory as `ember-control worker` does.

use ember_control::admin::worker::WorkerCommand;

use crate::error::CliError;

/// Runs `command` on a runtime of its own (it works on the service's database).
pub fn run(command: WorkerCommand) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Config(format!("starting the async runtime: {e}")))?;
    Ok(runtime.block_on(command.run(&mut std::io::stdout().lock()))?)
}
