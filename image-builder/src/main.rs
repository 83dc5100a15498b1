//! `ember-image build --out DIR`: the command line over `ember_image::build`.

use clap::{Parser, Subcommand};
use ember_image::{build, config, kernel, modules, workspace_dir, Options};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ember-image",
    version,
    about = "builds ember's worker OS image"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes vmlinuz, initramfs.img, cmdline, worker.img and manifest.json into --out.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Where to write the image's files.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Boot into emberd's self-test (`ember.selftest=1` on the kernel command line).
    #[arg(long)]
    selftest: bool,
    /// Control's fleet listener (the `control` key).
    #[arg(long, value_name = "URL")]
    control: Option<String>,
    /// Control's CA certificate, copied into the image.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// A file holding control's bootstrap token; it goes into the config file only.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The worker's name.
    #[arg(long)]
    name: Option<String>,
    /// What the machine does when the worker ends.
    #[arg(long, value_parser = ["poweroff", "reboot"])]
    on_exit: Option<String>,
    /// Also serve the worker API over TCP at this address.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// The AF_VSOCK port of the worker API.
    #[arg(long, value_name = "PORT")]
    vsock_port: Option<u32>,
    /// Any other configuration key (repeatable): `--set net=dhcp`, `--set advertise=…`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    other: Vec<(String, String)>,
    /// A kernel package (.deb) instead of the one `linux-image-amd64` depends on.
    #[arg(long, value_name = "DEB", conflicts_with_all = ["kernel", "modules"])]
    kernel_deb: Option<PathBuf>,
    /// A kernel image instead of Debian's (with --modules).
    #[arg(long, value_name = "PATH", requires = "modules")]
    kernel: Option<PathBuf>,
    /// The kernel's modules directory, `/lib/modules/RELEASE` (with --kernel).
    #[arg(long, value_name = "DIR", requires = "kernel")]
    modules: Option<PathBuf>,
    /// A module to pack besides the default ones (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    extra_modules: Vec<String>,
    /// A prebuilt static emberd instead of building one for x86_64-unknown-linux-musl.
    #[arg(long, value_name = "PATH")]
    emberd: Option<PathBuf>,
    /// Where downloads and unpacked packages are kept.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

/// `KEY=VALUE` as a pair.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let Cli {
        command: Command::Build(args),
    } = Cli::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember-image: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: BuildArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let kernel = match (args.kernel_deb, args.kernel, args.modules) {
        (Some(deb), _, _) => kernel::Source::Deb(deb),
        (None, Some(kernel), Some(modules)) => kernel::Source::Files { kernel, modules },
        _ => kernel::Source::Debian,
    };
    let mut wanted: Vec<String> = modules::default_set().map(str::to_owned).collect();
    wanted.extend(args.extra_modules);
    let options = Options {
        out: args.out,
        cache: args
            .cache
            .unwrap_or_else(|| workspace_dir().join("target/ember-image-cache")),
        kernel,
        emberd: args.emberd,
        modules: wanted,
        settings: config::Settings {
            control: args.control,
            ca: args.ca.is_some(),
            token,
            name: args.name,
            on_exit: args.on_exit,
            listen: args.listen,
            vsock_port: args.vsock_port,
            other: args.other,
        },
        ca: args.ca,
        selftest: args.selftest,
    };
    let manifest = build(&options)?;
    for file in &manifest.files {
        println!(
            "{:<14} {:>10} bytes  sha256 {}",
            file.name, file.size, file.sha256
        );
    }
    Ok(())
}
