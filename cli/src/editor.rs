//! The line editor's helper: redis-cli's hints (the rest of the syntax, greyed, after the
//! cursor) and Tab completion, both drawn from the command table.

use std::borrow::Cow;

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::validate::Validator;
use rustyline::{
    Cmd, ConditionalEventHandler, Context, Event, EventContext, Helper, Movement, RepeatCount,
};

use crate::commands;

/// Plugs [`commands::hint`] and [`commands::complete`] into rustyline.
pub(crate) struct ShellHelper;

/// A hint as rustyline wants it. Only the end of a keyword or command name the user has
/// started is inserted by Right-arrow; the syntax after it is there to read, not to insert.
pub(crate) struct SyntaxHint(commands::Hint);

impl Hint for SyntaxHint {
    fn display(&self) -> &str {
        &self.0.display
    }

    fn completion(&self) -> Option<&str> {
        self.0.completion.as_deref()
    }
}

impl Hinter for ShellHelper {
    type Hint = SyntaxHint;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<SyntaxHint> {
        // The hint describes what follows the end of the line: with the cursor elsewhere
        // it would describe the wrong place.
        if pos < line.len() {
            return None;
        }
        commands::hint(line).map(SyntaxHint)
    }
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(commands::complete(&line[..pos]))
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        // Grey (SGR 90), as redis-cli shows its hints.
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

/// Ctrl-C drops the line being typed and stays at the prompt; on an empty line it
/// interrupts (a fresh prompt). rustyline's own Ctrl-C would leave the greyed hint on the
/// screen after the abandoned text, where it reads as if it had been typed.
pub(crate) struct CtrlC;

impl ConditionalEventHandler for CtrlC {
    fn handle(
        &self,
        _evt: &Event,
        _n: RepeatCount,
        _positive: bool,
        ctx: &EventContext<'_>,
    ) -> Option<Cmd> {
        if ctx.line().is_empty() {
            Some(Cmd::Interrupt)
        } else {
            Some(Cmd::Kill(Movement::WholeLine))
        }
    }
}
