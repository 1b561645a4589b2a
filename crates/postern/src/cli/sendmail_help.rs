//! The `postern sendmail --help` text: every mode and flag of the classic
//! sendmail interface and what postern does with it (docs/operations.md
//! has the same list). A leaf.
//!
//! May touch: nothing.

/// The help text for `postern sendmail --help`.
pub const HELP: &str = "\
Usage: postern sendmail [options] [recipient ...]   (also as `sendmail`)
Reads a message from standard input and queues it (mode -bm).
Message options:
  -t            read recipients from To:, Cc:, Bcc: (Bcc: is removed);
                command-line recipients are added
  -i, -oi       a line with a single \".\" does not end the message
  -f ADDR, -r ADDR
                envelope sender (default: your login name @ host name)
  -F NAME       full name for a generated From: header
  -v            verbose: print the resolved recipients and the queue id on
                standard error, then wait (up to 30 s) for the delivery
                result of each recipient (needs a running daemon)
Modes:
  -bm           deliver mail (the default)
  -bp           list the queue (like mailq)
  -bs           an SMTP dialogue on standard input/output (as Symfony Mailer
                and other libraries use it): EHLO/HELO, MAIL, RCPT, DATA,
                RSET, NOOP, VRFY, QUIT, several messages per session; no
                STARTTLS or AUTH (the caller is a local user, recorded by uid);
                unknown local users are refused at RCPT (550 5.1.1);
                -t and -i are ignored with -bs (the envelope is SMTP's)
  -bv           verify the recipients: alias expansion, mailbox or next hop;
                exit 0 if all are deliverable, 67 otherwise; sends nothing
  -bt           address test: like -bv with the alias file lines and route
                detail, for the arguments or for addresses read from standard
                input (one per line, /quit or end of input stops). Not
                sendmail's rule-set debugger: postern has no rule sets.
  -bi           check the aliases file (errors as file:line, exit 65) and make
                the running daemon reload it (same as `newaliases`)
  -q, -q<time>  ask the running daemon to try every queued message now
                (-q1h and friends flush once, as Postfix does; postern's
                scheduler runs all the time)
  -qR<site>     ... only messages with a pending recipient containing <site>
  -qS<site>     ... only messages whose sender contains <site>
  -qI<id>       ... only messages whose queue id contains <id>
                (-q: exit 69 if no daemon is reachable, 75 if it refused)
Accepted for compatibility and ignored:
  -oX (other than -oi), -N X, -R X, -V X, -B X, -L X
Not supported (exit 64): -bd, -bD, -bh, -bH, -bP and other -b modes.
Silent on success: the message goes to the maildrop, and the daemon queues it
and logs it (with your uid); it waits there while no daemon runs.
Exit codes (sysexits): 0 ok (handed to the daemon), 64 usage, 65 bad message,
no recipients or bad aliases file, 67 unknown local user, 69 daemon not running
or no maildrop, 73 cannot write the maildrop, 75 try again, 78 config (or no
daemon found and no data directory configured).";
