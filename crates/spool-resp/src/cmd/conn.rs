//! Connection and server commands that clients send on connect or by habit: `PING`, `ECHO`, `HELLO`, `AUTH`,
//! `SELECT`, `CLIENT …`, `COMMAND …`, `INFO`, `DBSIZE`, `TIME`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Ctx, Spec, TABLE};
use crate::frame::{Frame, Proto};
use crate::parse::{CommandError, Parse};

/// The Redis version clients are told they talk to: the command set and reply shapes follow Redis 7.2, and clients
/// (Celery's kombu among them) gate features on this number.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

#[derive(Debug)]
pub(crate) enum ConnCmd {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Hello {
        proto: Option<Proto>,
        auth: Option<(String, String)>,
        name: Option<String>,
    },
    Auth {
        user: Option<String>,
        password: String,
    },
    Select(i64),
    Client(ClientCmd),
    Command(CommandCmd),
    Info(Vec<String>),
    DbSize,
    Time,
}

#[derive(Debug)]
pub(crate) enum ClientCmd {
    SetName(String),
    GetName,
    Id,
    SetInfo {
        attr: String,
        value: String,
    },
    Info,
    /// Options that only matter to Redis's memory management; accepted so clients that send them keep working.
    NoOp,
    Help,
}

#[derive(Debug)]
pub(crate) enum CommandCmd {
    All,
    Count,
    Docs,
    Info(Vec<String>),
    List,
}

fn client_name(name: String) -> Result<String, CommandError> {
    if name.bytes().any(|b| b <= b' ' || b > b'~') {
        return Err(CommandError::Other(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(name)
}

impl ConnCmd {
    pub fn parse(p: &mut Parse) -> Result<Self, CommandError> {
        let cmd = match p.name() {
            "PING" => {
                let msg = (p.remaining() > 0).then(|| p.next_bytes()).transpose()?;
                p.finish()?;
                ConnCmd::Ping(msg)
            }
            "ECHO" => ConnCmd::Echo(p.next_bytes()?),
            "HELLO" => {
                let proto = if p.remaining() > 0 {
                    match p.next_i64().map_err(|_| {
                        CommandError::Other("ERR Protocol version is not an integer or out of range".into())
                    })? {
                        2 => Some(Proto::Resp2),
                        3 => Some(Proto::Resp3),
                        _ => return Err(CommandError::Other("NOPROTO unsupported protocol version".into())),
                    }
                } else {
                    None
                };
                let (mut auth, mut name) = (None, None);
                while p.remaining() > 0 {
                    match p.next_keyword()?.as_str() {
                        "AUTH" => auth = Some((p.next_string()?, p.next_string()?)),
                        "SETNAME" => name = Some(client_name(p.next_string()?)?),
                        other => return Err(CommandError::syntax(format!("unknown HELLO option '{other}'"))),
                    }
                }
                ConnCmd::Hello { proto, auth, name }
            }
            "AUTH" => {
                let first = p.next_string()?;
                let cmd = match p.remaining() {
                    0 => ConnCmd::Auth {
                        user: None,
                        password: first,
                    },
                    _ => ConnCmd::Auth {
                        user: Some(first),
                        password: p.next_string()?,
                    },
                };
                p.finish()?;
                cmd
            }
            "SELECT" => ConnCmd::Select(p.next_i64()?),
            "CLIENT" => {
                let sub = p.next_keyword()?;
                let cmd = match sub.as_str() {
                    "SETNAME" => ClientCmd::SetName(client_name(p.next_string()?)?),
                    "GETNAME" => ClientCmd::GetName,
                    "ID" => ClientCmd::Id,
                    "INFO" => ClientCmd::Info,
                    "SETINFO" => ClientCmd::SetInfo {
                        attr: p.next_keyword()?,
                        value: p.next_string()?,
                    },
                    "NO-EVICT" | "NO-TOUCH" => {
                        p.next_string()?;
                        ClientCmd::NoOp
                    }
                    "HELP" => ClientCmd::Help,
                    _ => {
                        return Err(CommandError::Other(format!(
                            "ERR unknown subcommand '{sub}'. Try CLIENT HELP."
                        )))
                    }
                };
                p.finish()?;
                ConnCmd::Client(cmd)
            }
            "COMMAND" => {
                let cmd = if p.remaining() == 0 {
                    CommandCmd::All
                } else {
                    let sub = p.next_keyword()?;
                    match sub.as_str() {
                        "COUNT" => CommandCmd::Count,
                        // The docs clients ask for are optional: an empty answer makes redis-cli skip its hints.
                        "DOCS" => {
                            p.rest();
                            CommandCmd::Docs
                        }
                        "INFO" => CommandCmd::Info(
                            p.rest()
                                .iter()
                                .map(|n| String::from_utf8_lossy(n).into_owned())
                                .collect(),
                        ),
                        "LIST" => {
                            p.rest();
                            CommandCmd::List
                        }
                        _ => {
                            return Err(CommandError::Other(format!(
                                "ERR unknown subcommand '{sub}'. Try COMMAND HELP."
                            )))
                        }
                    }
                };
                p.finish()?;
                ConnCmd::Command(cmd)
            }
            "INFO" => ConnCmd::Info(
                p.rest()
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).to_lowercase())
                    .collect(),
            ),
            "DBSIZE" => ConnCmd::DbSize,
            _ => ConnCmd::Time,
        };
        p.finish()?;
        Ok(cmd)
    }

    pub async fn apply(self, ctx: &mut Ctx<'_>) -> Result<Frame, CommandError> {
        match self {
            ConnCmd::Ping(None) => Ok(Frame::Simple("PONG".into())),
            ConnCmd::Ping(Some(msg)) | ConnCmd::Echo(msg) => Ok(Frame::Bulk(msg)),
            ConnCmd::Hello { proto, auth, name } => {
                match auth {
                    Some((user, password)) => authenticate(ctx, Some(&user), &password)?,
                    None if !ctx.session.authenticated => {
                        return Err(CommandError::Other(
                            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO \
                             <proto> AUTH <user> <pass> option can be used to authenticate the client and select the \
                             RESP protocol version at the same time"
                                .into(),
                        ))
                    }
                    None => {}
                }
                if let Some(proto) = proto {
                    ctx.session.proto = proto;
                }
                if let Some(name) = name {
                    ctx.session.name = Some(name);
                }
                Ok(Frame::Map(vec![
                    (Frame::text("server"), Frame::text("spool")),
                    (Frame::text("version"), Frame::text(REDIS_VERSION)),
                    (Frame::text("proto"), Frame::Integer(ctx.session.proto.number())),
                    (Frame::text("id"), Frame::Integer(ctx.session.id as i64)),
                    (Frame::text("mode"), Frame::text("standalone")),
                    (Frame::text("role"), Frame::text("master")),
                    (Frame::text("modules"), Frame::Array(Vec::new())),
                ]))
            }
            ConnCmd::Auth { user, password } => {
                authenticate(ctx, user.as_deref(), &password)?;
                Ok(Frame::ok())
            }
            ConnCmd::Select(0) => Ok(Frame::ok()),
            ConnCmd::Select(_) => Err(CommandError::Other(
                "ERR DB index is out of range (Spool has one database, 0)".into(),
            )),
            ConnCmd::Client(cmd) => Ok(client(ctx, cmd)),
            ConnCmd::Command(cmd) => Ok(command(cmd)),
            ConnCmd::Info(sections) => Ok(Frame::text(info(ctx, &sections))),
            ConnCmd::DbSize => Ok(Frame::Integer(dbsize(ctx) as i64)),
            ConnCmd::Time => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Ok(Frame::Array(vec![
                    Frame::text(now.as_secs().to_string()),
                    Frame::text(now.subsec_micros().to_string()),
                ]))
            }
        }
    }
}

/// Checks a password the way Redis's single `default` user does.
fn authenticate(ctx: &mut Ctx<'_>, user: Option<&str>, password: &str) -> Result<(), CommandError> {
    let Some(expected) = &ctx.shared.config.password else {
        // Without a password the default user accepts anything, but the one-argument form is a likely
        // misconfiguration, and Redis says so.
        if user.is_none() {
            return Err(CommandError::Other(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure \
                 your configuration is correct?"
                    .into(),
            ));
        }
        return Ok(());
    };
    if user.is_none_or(|u| u == "default") && constant_time_eq(password.as_bytes(), expected.as_bytes()) {
        ctx.session.authenticated = true;
        Ok(())
    } else {
        Err(CommandError::Other(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn client(ctx: &mut Ctx<'_>, cmd: ClientCmd) -> Frame {
    let s = &mut *ctx.session;
    match cmd {
        ClientCmd::SetName(name) => {
            // Redis: an empty name removes the name.
            s.name = (!name.is_empty()).then_some(name);
            Frame::ok()
        }
        ClientCmd::GetName => s.name.clone().map_or(Frame::Null, Frame::text),
        ClientCmd::Id => Frame::Integer(s.id as i64),
        ClientCmd::SetInfo { attr, value } => match attr.as_str() {
            "LIB-NAME" => {
                s.lib_name = Some(value);
                Frame::ok()
            }
            "LIB-VER" => {
                s.lib_ver = Some(value);
                Frame::ok()
            }
            _ => Frame::Error(format!("ERR Unrecognized option '{attr}'")),
        },
        ClientCmd::Info => Frame::text(format!(
            "id={} addr={} name={} age={} resp={} lib-name={} lib-ver={}\n",
            s.id,
            s.addr,
            s.name.as_deref().unwrap_or(""),
            s.connected_at.elapsed().as_secs(),
            s.proto.number(),
            s.lib_name.as_deref().unwrap_or(""),
            s.lib_ver.as_deref().unwrap_or(""),
        )),
        ClientCmd::NoOp => Frame::ok(),
        ClientCmd::Help => Frame::Array(
            [
                "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                "GETNAME",
                "SETNAME <name>",
                "ID",
                "INFO",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "NO-EVICT <ON|OFF>",
                "NO-TOUCH <ON|OFF>",
                "HELP",
            ]
            .into_iter()
            .map(|l| Frame::Simple(l.into()))
            .collect(),
        ),
    }
}

/// A command's description in the shape of Redis 7's `COMMAND INFO`.
fn command_entry(spec: &Spec) -> Frame {
    let step = i64::from(spec.first_key != 0);
    Frame::Array(vec![
        Frame::text(spec.name.to_lowercase()),
        Frame::Integer(spec.arity),
        Frame::Set(spec.flags.iter().map(|f| Frame::Simple((*f).into())).collect()),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(step),
        Frame::Set(Vec::new()),
        Frame::Set(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

fn command(cmd: CommandCmd) -> Frame {
    match cmd {
        CommandCmd::All => Frame::Array(TABLE.iter().map(command_entry).collect()),
        CommandCmd::Count => Frame::Integer(TABLE.len() as i64),
        CommandCmd::Docs => Frame::Map(Vec::new()),
        CommandCmd::Info(names) => Frame::Array(
            names
                .iter()
                .map(|n| super::lookup(n).map_or(Frame::NullArray, command_entry))
                .collect(),
        ),
        CommandCmd::List => Frame::Array(TABLE.iter().map(|s| Frame::text(s.name.to_lowercase())).collect()),
    }
}

/// Queues that hold any job: the keys a Redis user would see.
fn dbsize(ctx: &Ctx<'_>) -> usize {
    ctx.shared
        .broker
        .list_queues()
        .iter()
        .filter(|q| q.ready + q.scheduled + q.leased + q.retry + q.dead > 0)
        .count()
}

fn info(ctx: &Ctx<'_>, sections: &[String]) -> String {
    let all = sections.is_empty()
        || sections
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "everything" | "default"));
    let wanted = |name: &str| all || sections.iter().any(|s| s == name);
    let shared = ctx.shared;
    let mut out = String::new();
    // `writeln!` into a String cannot fail; the results are ignored for that reason.
    if wanted("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nspool_version:{}\r\nredis_mode:standalone\r\n\
             process_id:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            shared.started.elapsed().as_secs(),
        );
    }
    if wanted("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{}\r\nmaxclients:{}\r\n\r\n",
            shared.connected.load(Ordering::Relaxed),
            shared.blocked.load(Ordering::Relaxed),
            shared.config.max_connections,
        );
    }
    if wanted("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\r\n",
            shared.connections_total.load(Ordering::Relaxed),
            shared.commands_total.load(Ordering::Relaxed),
            shared.rejected_total.load(Ordering::Relaxed),
        );
    }
    if wanted("keyspace") {
        let keys = dbsize(ctx);
        out.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    if wanted("spool") {
        let queues = shared.broker.list_queues();
        let (jobs, _) = shared.broker.totals();
        let _ = write!(
            out,
            "# Spool\r\nqueues:{}\r\njobs:{jobs}\r\npayload_bytes_held:{}\r\n",
            queues.len(),
            shared.broker.payload_bytes_held()
        );
        for q in &queues {
            let _ = write!(
                out,
                "queue_{}:ready={},scheduled={},leased={},retry={},dead={},paused={}\r\n",
                q.name,
                q.ready,
                q.scheduled,
                q.leased,
                q.retry,
                q.dead,
                u8::from(q.paused)
            );
        }
        out.push_str("\r\n");
    }
    out.truncate(out.trim_end().len());
    out.push_str("\r\n");
    out
}
