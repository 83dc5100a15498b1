//! A command function: `_start` runs once per invocation, in a fresh instance. The event is
//! stdin, the response is stdout.

use std::io;

fn main() -> io::Result<()> {
    io::copy(&mut io::stdin().lock(), &mut io::stdout().lock())?;
    Ok(())
}
