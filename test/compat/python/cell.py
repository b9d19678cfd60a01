"""The matrix's Python cells (test/compat/README.md): psycopg2, psycopg 3 and
SQLAlchemy (1.4, over psycopg2, with the team guide's QueuePool settings),
run by the system Python with Debian's packages.

    /usr/bin/python3 cell.py psycopg2|psycopg3|sqlalchemy

Where to connect comes from COMPAT_* variables; one JSON line per check on
stdout, {"done": true} last.
"""

import datetime
import decimal
import hashlib
import json
import os
import sys
import threading
import time
import traceback
import uuid

ENV = os.environ
PREFIX = ENV["COMPAT_PREFIX"]
SKIP = {s for s in ENV.get("COMPAT_SKIP", "").split(",") if s}
DSN = "host=%s port=%s user=%s password=%s dbname=%s sslmode=disable connect_timeout=10" % (
    ENV["COMPAT_HOST"], ENV["COMPAT_PORT"], ENV["COMPAT_USER"], ENV["COMPAT_PASSWORD"], ENV["COMPAT_DB"])
URL = "postgresql+psycopg2://%s:%s@%s:%s/%s" % (
    ENV["COMPAT_USER"], ENV["COMPAT_PASSWORD"], ENV["COMPAT_HOST"], ENV["COMPAT_PORT"], ENV["COMPAT_DB"])


class Skip(Exception):
    """A check the driver cannot do at all."""


class Failed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failed(msg)


def report(check, fn):
    if check in SKIP:
        return
    began = time.time()
    out = {"check": check, "ok": True}
    try:
        fn()
    except Skip as e:
        out["skip"] = str(e)
    except Exception as e:  # every failure is reported, the next check runs
        out = {"check": check, "ok": False, "detail": ("%s: %s" % (type(e).__name__, e))[:3000]}
        traceback.print_exc(file=sys.stderr)
    out["ms"] = round((time.time() - began) * 1000, 1)
    print(json.dumps(out), flush=True)


UTC = datetime.timezone.utc
VALUES = (
    -2147483648,
    9007199254740993,
    decimal.Decimal("12345678901234567890.000000000123"),
    "héllo, 'quoted' \"text\" \\ ; -- not a comment",
    bytes(range(256)) * 2,
    datetime.datetime(2026, 12, 2, 19, 20, 7, 123456, tzinfo=UTC),
    {"a": 1.5, "b": ["x", None]},
    {"k": "v", "n": 2},
    uuid.UUID("4f1b9c3e-6b1d-4b8e-9c61-0a4e8f2d7c55"),
    [1, -2, 3],
    ["a,b", 'c"d', "", "{}"],
    None,
)
# Parenthesised: psycopg2 interpolates literals, and -2147483648::int
# would be -(2147483648::int).
ECHO = ("SELECT (%s)::int, (%s)::bigint, (%s)::numeric, (%s)::text, (%s)::bytea, (%s)::timestamptz, "
        "(%s)::json, (%s)::jsonb, (%s)::uuid, (%s)::int[], (%s)::text[], (%s)::text")
COLS = "i int, b bigint, n numeric, t text, by bytea, ts timestamptz, j json, jb jsonb, u uuid, ia int[], ta text[], nul text"


def same_row(got, what):
    got = tuple(bytes(v) if isinstance(v, memoryview) else v for v in got)
    expect(got == VALUES, "%s: sent %r, got %r" % (what, VALUES, got))


def state(e):
    """SQLSTATE of a psycopg2 or psycopg 3 error."""
    return getattr(e, "pgcode", None) or getattr(e, "sqlstate", None)


def expect_state(fn, code, what):
    try:
        fn()
    except Exception as e:  # the driver's error class, whichever driver
        expect(state(e) == code, "%s: want SQLSTATE %s, got %s: %s" % (what, code, state(e), e))
        return
    raise Failed("%s: want SQLSTATE %s, got no error" % (what, code))


class DBAPI:
    """The common checks over a DB-API 2 driver (psycopg2 or psycopg 3)."""

    def __init__(self, mod, params):
        self.mod = mod
        self.params = params  # wraps VALUES for the driver (json)

    def connect(self, autocommit=True):
        c = self.mod.connect(DSN)
        c.autocommit = autocommit
        return c

    def run(self, c, sql, args=None):
        cur = c.cursor()
        cur.execute(sql, args)
        return cur

    def ddl(self, c, *stmts):
        for q in stmts:
            self.run(c, q).close()

    def one(self, c, sql, args=None):
        cur = self.run(c, sql, args)
        row = cur.fetchone()
        cur.close()
        return row

    def tx_own_write(self):
        c = self.connect()
        t = PREFIX + "tx"
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY, v text)")
        c.autocommit = False
        self.run(c, "INSERT INTO " + t + " VALUES (%s, %s)", (7, "seven"))
        got = self.one(c, "SELECT v FROM " + t + " WHERE id = %s", (7,))
        expect(got == ("seven",), "inside the transaction: want ('seven',), got %r" % (got,))
        c.commit()
        other = self.connect()
        got = self.one(other, "SELECT v FROM " + t + " WHERE id = %s", (7,))
        expect(got == ("seven",), "after commit, another connection: want ('seven',), got %r" % (got,))
        other.close()
        c.close()

    def ryw(self, w, r, t):
        self.ddl(w, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY, v int)", "INSERT INTO " + t + " VALUES (1, 0)")
        for i in range(1, 21):
            self.run(w, "INSERT INTO " + t + " VALUES (%s, %s)", (i + 1, i + 1))
            self.run(w, "UPDATE " + t + " SET v = %s WHERE id = 1", (i,))
            got = self.one(r, "SELECT v, (SELECT count(*) FROM " + t + ") FROM " + t + " WHERE id = 1")
            expect(got == (i, i + 1), "round %d: stale read: want %r, got %r" % (i, (i, i + 1), got))

    def ryw_same_conn(self):
        c = self.connect()
        self.ryw(c, c, PREFIX + "ryw1")
        c.close()

    def ryw_other_conn(self):
        w, r = self.connect(), self.connect()
        self.ryw(w, r, PREFIX + "ryw2")
        w.close()
        r.close()

    def error_rollback(self):
        c = self.connect()
        t = PREFIX + "err"
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY)", "INSERT INTO " + t + " VALUES (1)")
        c.autocommit = False
        self.run(c, "INSERT INTO " + t + " VALUES (%s)", (2,))
        expect_state(lambda: self.run(c, "INSERT INTO " + t + " VALUES (%s)", (1,)), "23505", "duplicate key")
        expect_state(lambda: self.run(c, "SELECT 1"), "25P02", "after the error in the transaction")
        c.rollback()
        got = self.one(c, "SELECT count(*) FROM " + t)
        expect(got == (1,), "after rollback: want 1 row, got %r" % (got,))
        c.commit()
        c.close()

    def cancel(self):
        c = self.connect()
        timer = threading.Timer(0.5, c.cancel)
        began = time.time()
        timer.start()
        expect_state(lambda: self.run(c, "SELECT pg_sleep(30)"), "57014", "cancelled pg_sleep")
        took = time.time() - began
        expect(took < 10, "the cancel took %.1fs" % took)
        got = self.one(c, "SELECT 1")
        expect(got == (1,), "next statement: want (1,), got %r" % (got,))
        c.close()

    def large_result(self):
        c = self.connect()
        cur = self.run(c, "SELECT g, repeat('x', 20) FROM generate_series(1, %s) g", (100000,))
        n = s = 0
        for g, x in cur:
            n += 1
            s += g
        expect(n == 100000 and s == 100000 * 100001 // 2, "want 100000 rows summing to %d, got %d summing to %d" % (100000 * 100001 // 2, n, s))
        c.close()

    def large_value(self):
        c = self.connect()
        t = PREFIX + "blob"
        blob = os.urandom(10 << 20)
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY, b bytea)")
        self.run(c, "INSERT INTO " + t + " VALUES (1, %s)", (blob,))
        got = bytes(self.one(c, "SELECT b FROM " + t + " WHERE id = 1")[0])
        expect(got == blob, "10 MB bytea: sent %d bytes, got %d different ones" % (len(blob), len(got)))
        md5 = self.one(c, "SELECT md5(b) FROM " + t + " WHERE id = 1")[0]
        expect(md5 == hashlib.md5(blob).hexdigest(), "md5 on the server differs")
        c.close()

    def concurrency(self):
        t = PREFIX + "conc"
        c = self.connect()
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY, v int)")
        errors = []

        def client(k):
            try:
                conn = self.connect(autocommit=False)
                for i in range(20):
                    rid = k * 20 + i
                    self.run(conn, "INSERT INTO " + t + " VALUES (%s, %s)", (rid, k))
                    got = self.one(conn, "SELECT v FROM " + t + " WHERE id = %s", (rid,))
                    expect(got == (k,), "client %d row %d: want (%d,), got %r" % (k, rid, k, got))
                    conn.commit()
                conn.close()
            except Exception as e:
                errors.append("client %d: %s" % (k, e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        expect(not errors, "%d of 50 clients failed, first: %s" % (len(errors), errors[:1]))
        got = self.one(c, "SELECT count(*), count(DISTINCT v) FROM " + t)
        expect(got == (1000, 50), "want (1000, 50), got %r" % (got,))
        c.close()


class Psycopg2(DBAPI):
    def __init__(self):
        import psycopg2
        import psycopg2.extras
        psycopg2.extras.register_uuid()
        v = list(VALUES)
        v[6], v[7] = psycopg2.extras.Json(VALUES[6]), psycopg2.extras.Json(VALUES[7])
        super().__init__(psycopg2, tuple(v))
        self.version = "psycopg2 " + psycopg2.__version__.split()[0]

    def types(self):
        c = self.connect()
        same_row(self.one(c, ECHO, self.params), "echo")
        # psycopg2 has no protocol-level prepare: SQL PREPARE/EXECUTE.
        self.run(c, "PREPARE " + PREFIX + "echo AS " + ECHO.replace("%s", "$%d") % tuple(range(1, 13)))
        for _ in range(3):
            same_row(self.one(c, "EXECUTE " + PREFIX + "echo (" + ", ".join(["%s"] * 12) + ")", self.params), "prepared echo")
        self.run(c, "DEALLOCATE " + PREFIX + "echo")
        t = PREFIX + "types"
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE %s (id int PRIMARY KEY, %s)" % (t, COLS))
        self.run(c, "INSERT INTO " + t + " VALUES (1, " + ", ".join(["%s"] * 12) + ")", self.params)
        same_row(self.one(c, "SELECT i, b, n, t, by, ts, j, jb, u, ia, ta, nul FROM " + t + " WHERE id = %s", (1,)), "read back")
        c.close()

    def listen_notify(self):
        import select
        l, n = self.connect(), self.connect()
        ch = PREFIX + "chan"
        self.run(l, "LISTEN " + ch)
        self.run(n, "SELECT pg_notify(%s, %s)", (ch, "payload-1"))
        deadline = time.time() + 10
        while not l.notifies and time.time() < deadline:
            select.select([l], [], [], 0.5)
            l.poll()
        expect(l.notifies, "no notification within 10s")
        note = l.notifies.pop(0)
        expect((note.channel, note.payload) == (ch, "payload-1"), "want %s/payload-1, got %s/%s" % (ch, note.channel, note.payload))
        self.run(l, "UNLISTEN *")
        l.close()
        n.close()

    def server_cursor(self):
        c = self.connect(autocommit=False)
        cur = c.cursor(name=PREFIX + "cur")
        cur.itersize = 2000
        cur.execute("SELECT g FROM generate_series(1, %s) g", (100000,))
        n = s = 0
        for (g,) in cur:
            n += 1
            s += g
        expect(n == 100000 and s == 100000 * 100001 // 2, "named cursor: %d rows summing to %d" % (n, s))
        cur.close()
        c.commit()
        c.close()

    def copy(self):
        import io
        c = self.connect()
        t = PREFIX + "copy"
        self.ddl(c, "DROP TABLE IF EXISTS " + t, "CREATE TABLE " + t + " (id int PRIMARY KEY, name text)")
        data = "".join("%d\tname %d \\\\ x\n" % (i, i) for i in range(10000))
        cur = c.cursor()
        cur.copy_expert("COPY " + t + " (id, name) FROM STDIN", io.StringIO(data))
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT id, name FROM " + t + " ORDER BY id) TO STDOUT", out)
        expect(out.getvalue() == data, "COPY TO gave %d bytes, COPY FROM sent %d" % (len(out.getvalue()), len(data)))
        c.close()


class Psycopg3(DBAPI):
    def __init__(self):
        import psycopg
        from psycopg.types.json import Json, Jsonb
        v = list(VALUES)
        v[6], v[7] = Json(VALUES[6]), Jsonb(VALUES[7])
        super().__init__(psycopg, tuple(v))
        self.version = "psycopg " + psycopg.__version__

    def types(self):
        c = self.connect()
        same_row(c.execute(ECHO, self.params).fetchone(), "echo")
        for _ in range(3):
            same_row(c.execute(ECHO, self.params, prepare=True).fetchone(), "prepared echo")
        t = PREFIX + "types"
        c.execute("DROP TABLE IF EXISTS %s" % t)
        c.execute("CREATE TABLE %s (id int PRIMARY KEY, %s)" % (t, COLS))
        c.execute("INSERT INTO " + t + " VALUES (1, " + ", ".join(["%s"] * 12) + ")", self.params)
        same_row(c.execute("SELECT i, b, n, t, by, ts, j, jb, u, ia, ta, nul FROM " + t + " WHERE id = %s", (1,)).fetchone(), "read back")
        c.close()

    def listen_notify(self):
        l, n = self.connect(), self.connect()
        ch = PREFIX + "chan"
        got = []
        l.add_notify_handler(lambda note: got.append((note.channel, note.payload)))
        l.execute("LISTEN " + ch)
        n.execute("SELECT pg_notify(%s, %s)", (ch, "payload-1"))
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            l.execute("SELECT 1")  # notifications arrive with any answer
            time.sleep(0.05)
        expect(got == [(ch, "payload-1")], "want [(%s, payload-1)], got %r" % (ch, got))
        l.execute("UNLISTEN *")
        l.close()
        n.close()

    def concurrency(self):
        from psycopg_pool import ConnectionPool
        t = PREFIX + "conc"
        with self.connect() as c:
            c.execute("DROP TABLE IF EXISTS %s" % t)
            c.execute("CREATE TABLE %s (id int PRIMARY KEY, v int)" % t)
        errors = []
        pool = ConnectionPool(DSN, min_size=10, max_size=50, timeout=30)

        def client(k):
            try:
                for i in range(20):
                    rid = k * 20 + i
                    with pool.connection() as conn:  # a transaction per checkout
                        conn.execute("INSERT INTO " + t + " VALUES (%s, %s)", (rid, k))
                        got = conn.execute("SELECT v FROM " + t + " WHERE id = %s", (rid,)).fetchone()
                        expect(got == (k,), "client %d row %d: want (%d,), got %r" % (k, rid, k, got))
            except Exception as e:
                errors.append("client %d: %s" % (k, e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        pool.close()
        expect(not errors, "%d of 50 clients failed, first: %s" % (len(errors), errors[:1]))
        with self.connect() as c:
            got = c.execute("SELECT count(*), count(DISTINCT v) FROM " + t).fetchone()
        expect(got == (1000, 50), "want (1000, 50), got %r" % (got,))

    def pipeline(self):
        import psycopg
        c = self.connect()
        t = PREFIX + "pipe"
        c.execute("DROP TABLE IF EXISTS %s" % t)
        c.execute("CREATE TABLE %s (id int PRIMARY KEY)" % t)
        with c.pipeline():
            curs = [c.execute("INSERT INTO " + t + " VALUES (%s) RETURNING id", (i,)) for i in range(1, 11)]
        expect([cur.fetchone()[0] for cur in curs] == list(range(1, 11)), "pipelined INSERT … RETURNING answers out of order")
        try:
            with c.pipeline():
                c.execute("INSERT INTO " + t + " VALUES (%s)", (100,))
                c.execute("INSERT INTO " + t + " VALUES (%s)", (1,))  # duplicate
                c.execute("INSERT INTO " + t + " VALUES (%s)", (101,))
            raise Failed("a pipeline with a duplicate key raised nothing")
        except psycopg.errors.UniqueViolation:
            pass
        got = c.execute("SELECT count(*), max(id) FROM " + t).fetchone()
        # The pipeline's statements share one implicit transaction up to
        # its Sync: the error rolls back the INSERT before it too, and
        # the one after it was skipped.
        expect(got == (10, 10), "after the failed pipeline: want (10, 10), got %r" % (got,))
        c.close()

    def server_cursor(self):
        c = self.connect(autocommit=False)
        cur = c.cursor(name=PREFIX + "cur")
        cur.itersize = 2000
        cur.execute("SELECT g FROM generate_series(1, %s) g", (100000,))
        n = s = 0
        for (g,) in cur:
            n += 1
            s += g
        expect(n == 100000 and s == 100000 * 100001 // 2, "named cursor: %d rows summing to %d" % (n, s))
        cur.close()
        c.commit()
        c.close()

    def copy(self):
        c = self.connect()
        t = PREFIX + "copy"
        c.execute("DROP TABLE IF EXISTS %s" % t)
        c.execute("CREATE TABLE %s (id int PRIMARY KEY, name text, b bytea)" % t)
        rows = [(i, "name %d\t\"\\" % i, bytes([i % 256, 0, 255])) for i in range(10000)]
        with c.cursor().copy("COPY " + t + " (id, name, b) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        back = []
        with c.cursor().copy("COPY (SELECT id, name, b FROM " + t + " ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int4", "text", "bytea"])
            for r in cp.rows():
                back.append((r[0], r[1], bytes(r[2])))
        expect(back == rows, "COPY TO gave %d rows back, first differing: %r" % (len(back), next((b for b, r in zip(back, rows) if b != r), None)))
        c.close()

    def prepared(self):
        from psycopg_pool import ConnectionPool
        t = PREFIX + "prep"
        with self.connect() as c:
            c.execute("DROP TABLE IF EXISTS %s" % t)
            c.execute("CREATE TABLE %s (id int PRIMARY KEY, v text)" % t)
        pool = ConnectionPool(DSN, min_size=4, max_size=4, kwargs={"prepare_threshold": 0, "autocommit": True})
        errors = []

        def worker(k):
            try:
                for i in range(25):
                    rid = k * 100 + i
                    with pool.connection() as conn:
                        conn.execute("INSERT INTO " + t + " VALUES (%s, %s)", (rid, "v%d" % rid))
                        got = conn.execute("SELECT v FROM " + t + " WHERE id = %s", (rid,)).fetchone()
                        expect(got == ("v%d" % rid,), "row %d: got %r" % (rid, got))
            except Exception as e:
                errors.append("worker %d: %s" % (k, e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        with pool.connection() as conn:
            # The driver really prepares: it names its statements _pg3_N.
            expect(conn._prepared._names, "psycopg prepared nothing (prepare_threshold=0)")
        pool.close()
        expect(not errors, "%d workers failed, first: %s" % (len(errors), errors[:1]))
        with self.connect() as c:
            expect(c.execute("SELECT count(*) FROM " + t).fetchone() == (200,), "want 200 rows")


class SQLAlchemy:
    """SQLAlchemy 1.4 over psycopg2, with the guide's QueuePool settings."""

    def __init__(self):
        import sqlalchemy
        import psycopg2.extras
        psycopg2.extras.register_uuid()
        self.sa = sqlalchemy
        self.engine = sqlalchemy.create_engine(URL, pool_size=10, max_overflow=20, pool_timeout=30,
                                               pool_recycle=3600, pool_pre_ping=True, future=True)
        self.version = "SQLAlchemy %s (psycopg2 %s)" % (sqlalchemy.__version__, psycopg2.__version__.split()[0])

    def text(self, s):
        return self.sa.text(s)

    def types(self):
        sa = self.sa
        from sqlalchemy.dialects import postgresql as pg
        md = sa.MetaData()
        t = sa.Table(PREFIX + "types", md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("i", sa.Integer), sa.Column("b", sa.BigInteger), sa.Column("n", sa.Numeric),
                     sa.Column("t", sa.Text), sa.Column("by", sa.LargeBinary),
                     sa.Column("ts", sa.DateTime(timezone=True)), sa.Column("j", sa.JSON), sa.Column("jb", pg.JSONB),
                     sa.Column("u", pg.UUID(as_uuid=True)), sa.Column("ia", pg.ARRAY(sa.Integer)),
                     sa.Column("ta", pg.ARRAY(sa.Text)), sa.Column("nul", sa.Text))
        with self.engine.begin() as c:
            md.drop_all(c)
            md.create_all(c)
        cols = ["i", "b", "n", "t", "by", "ts", "j", "jb", "u", "ia", "ta", "nul"]
        with self.engine.begin() as c:
            c.execute(t.insert(), dict(zip(["id"] + cols, (1,) + VALUES)))
        with self.engine.connect() as c:
            row = c.execute(sa.select(*[t.c[k] for k in cols]).where(t.c.id == 1)).one()
            same_row(tuple(row), "read back through Core")
            echo = sa.text("SELECT CAST(:i AS int), CAST(:b AS bigint), CAST(:t AS text), CAST(:nul AS text)")
            got = c.execute(echo, {"i": VALUES[0], "b": VALUES[1], "t": VALUES[3], "nul": None}).one()
            expect(tuple(got) == (VALUES[0], VALUES[1], VALUES[3], None), "bound text() echo: got %r" % (tuple(got),))

    def tx_own_write(self):
        t = PREFIX + "tx"
        with self.engine.begin() as c:
            c.execute(self.text("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v text)" % (t, t)))
        with self.engine.begin() as c:
            c.execute(self.text("INSERT INTO " + t + " VALUES (7, 'seven')"))
            got = c.execute(self.text("SELECT v FROM " + t + " WHERE id = 7")).scalar()
            expect(got == "seven", "inside the transaction: got %r" % got)
        with self.engine.connect() as c:
            expect(c.execute(self.text("SELECT v FROM " + t + " WHERE id = 7")).scalar() == "seven", "after commit: not there")

    def ryw(self, t, same):
        with self.engine.begin() as c:
            c.execute(self.text("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v int); INSERT INTO %s VALUES (1, 0)" % (t, t, t)))
        keep = self.engine.connect() if same else None
        try:
            for i in range(1, 21):
                if same:
                    with keep.begin():
                        keep.execute(self.text("UPDATE " + t + " SET v = :v WHERE id = 1"), {"v": i})
                    got = keep.execute(self.text("SELECT v FROM " + t + " WHERE id = 1")).scalar()
                    keep.rollback()
                else:
                    # The pooled application pattern: each unit of work
                    # checks a connection out of the QueuePool and back.
                    with self.engine.begin() as c:
                        c.execute(self.text("UPDATE " + t + " SET v = :v WHERE id = 1"), {"v": i})
                    with self.engine.connect() as c:
                        got = c.execute(self.text("SELECT v FROM " + t + " WHERE id = 1")).scalar()
                expect(got == i, "round %d: stale read: want %d, got %r" % (i, i, got))
        finally:
            if keep is not None:
                keep.close()

    def ryw_same_conn(self):
        self.ryw(PREFIX + "ryw1", True)

    def ryw_other_conn(self):
        self.ryw(PREFIX + "ryw2", False)

    def error_rollback(self):
        t = PREFIX + "err"
        with self.engine.begin() as c:
            c.execute(self.text("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY); INSERT INTO %s VALUES (1)" % (t, t, t)))
        with self.engine.connect() as c:
            tx = c.begin()
            c.execute(self.text("INSERT INTO " + t + " VALUES (2)"))
            try:
                c.execute(self.text("INSERT INTO " + t + " VALUES (1)"))
                raise Failed("duplicate key: no error")
            except self.sa.exc.IntegrityError as e:
                expect(state(e.orig) == "23505", "duplicate key: SQLSTATE %s" % state(e.orig))
            tx.rollback()
            expect(c.execute(self.text("SELECT count(*) FROM " + t)).scalar() == 1, "after rollback: the row written before the error is there")

    def cancel(self):
        with self.engine.connect() as c:
            raw = c.connection.dbapi_connection
            timer = threading.Timer(0.5, raw.cancel)
            timer.start()
            began = time.time()
            try:
                c.execute(self.text("SELECT pg_sleep(30)"))
                raise Failed("pg_sleep was not cancelled")
            except self.sa.exc.OperationalError as e:
                expect(state(e.orig) == "57014", "want SQLSTATE 57014, got %s" % state(e.orig))
            expect(time.time() - began < 10, "the cancel took too long")
            c.rollback()
            expect(c.execute(self.text("SELECT 1")).scalar() == 1, "next statement on the connection failed")

    def large_result(self):
        with self.engine.connect() as c:
            rows = c.execute(self.text("SELECT g FROM generate_series(1, 100000) g")).all()
        expect(len(rows) == 100000 and sum(r[0] for r in rows) == 100000 * 100001 // 2, "wrong rows: %d" % len(rows))

    def large_value(self):
        t = PREFIX + "blob"
        blob = os.urandom(10 << 20)
        with self.engine.begin() as c:
            c.execute(self.text("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, b bytea)" % (t, t)))
            c.execute(self.text("INSERT INTO " + t + " VALUES (1, :b)"), {"b": blob})
        with self.engine.connect() as c:
            got = bytes(c.execute(self.text("SELECT b FROM " + t + " WHERE id = 1")).scalar())
        expect(got == blob, "10 MB bytea differs (%d bytes back)" % len(got))

    def listen_notify(self):
        import select
        ch = PREFIX + "chan"
        with self.engine.connect() as lc:
            raw = lc.connection.dbapi_connection
            raw.autocommit = True
            cur = raw.cursor()
            cur.execute("LISTEN " + ch)
            with self.engine.begin() as n:
                n.execute(self.text("SELECT pg_notify(:c, 'payload-1')"), {"c": ch})
            deadline = time.time() + 10
            while not raw.notifies and time.time() < deadline:
                select.select([raw], [], [], 0.5)
                raw.poll()
            expect(raw.notifies, "no notification within 10s")
            note = raw.notifies.pop(0)
            expect((note.channel, note.payload) == (ch, "payload-1"), "got %s/%s" % (note.channel, note.payload))
            cur.execute("UNLISTEN *")
            raw.autocommit = False

    def concurrency(self):
        t = PREFIX + "conc"
        with self.engine.begin() as c:
            c.execute(self.text("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, v int)" % (t, t)))
        errors = []

        def client(k):
            try:
                for i in range(20):
                    rid = k * 20 + i
                    with self.engine.begin() as c:
                        c.execute(self.text("INSERT INTO " + t + " VALUES (:id, :v)"), {"id": rid, "v": k})
                        got = c.execute(self.text("SELECT v FROM " + t + " WHERE id = :id"), {"id": rid}).scalar()
                        expect(got == k, "client %d row %d: got %r" % (k, rid, got))
            except Exception as e:
                errors.append("client %d: %s" % (k, e))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        expect(not errors, "%d of 50 clients failed, first: %s" % (len(errors), errors[:1]))
        with self.engine.connect() as c:
            got = tuple(c.execute(self.text("SELECT count(*), count(DISTINCT v) FROM " + t)).one())
        expect(got == (1000, 50), "want (1000, 50), got %r" % (got,))

    def orm(self):
        # The guide's chat application: users and their messages.
        sa = self.sa
        from sqlalchemy.orm import declarative_base, relationship, Session
        Base = declarative_base()

        class User(Base):
            __tablename__ = PREFIX + "users"
            id = sa.Column(sa.Integer, primary_key=True)
            name = sa.Column(sa.String(50), nullable=False, unique=True)
            messages = relationship("Message", back_populates="user", order_by="Message.id")

        class Message(Base):
            __tablename__ = PREFIX + "messages"
            id = sa.Column(sa.Integer, primary_key=True)
            user_id = sa.Column(sa.Integer, sa.ForeignKey(PREFIX + "users.id"), nullable=False)
            body = sa.Column(sa.Text, nullable=False)
            created_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())
            user = relationship("User", back_populates="messages")

        with self.engine.begin() as c:
            Base.metadata.drop_all(c)
            Base.metadata.create_all(c)
        for k in range(20):
            with Session(self.engine) as s:
                u = User(name="user%d" % k, messages=[Message(body="hello %d.%d" % (k, m)) for m in range(3)])
                s.add(u)
                s.commit()
                uid = u.id
            with Session(self.engine) as s:  # another pooled connection, right after the commit
                got = s.get(User, uid)
                expect(got is not None and [m.body for m in got.messages] == ["hello %d.%d" % (k, m) for m in range(3)],
                       "user %d read back on a new Session: %r" % (k, got and [m.body for m in got.messages]))
        with Session(self.engine) as s:
            try:
                s.add(User(name="user0"))
                s.commit()
                raise Failed("a duplicate user name committed")
            except self.sa.exc.IntegrityError:
                s.rollback()
            expect(s.query(User).count() == 20, "after the failed commit: want 20 users")

    def pool_reuse(self):
        errors = []
        seen = set()
        lock = threading.Lock()

        def worker(k):
            try:
                for i in range(30):
                    with self.engine.connect() as c:
                        with lock:
                            seen.add(id(c.connection.dbapi_connection))
                        got = c.execute(self.text("SELECT :v"), {"v": "%d-%d" % (k, i)}).scalar()
                        expect(got == "%d-%d" % (k, i), "worker %d: got %r" % (k, got))
            except Exception as e:
                errors.append(str(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(40)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        expect(not errors, "%d workers failed, first: %s" % (len(errors), errors[:1]))
        expect(len(seen) <= 30, "the QueuePool opened %d connections (pool_size 10 + max_overflow 20)" % len(seen))


CELLS = {
    "psycopg2": (Psycopg2, ["server_cursor", "copy"]),
    "psycopg3": (Psycopg3, ["pipeline", "server_cursor", "copy", "prepared"]),
    "sqlalchemy": (SQLAlchemy, ["orm", "pool_reuse"]),
}
COMMON = ["types", "tx_own_write", "ryw_same_conn", "ryw_other_conn", "error_rollback",
          "cancel", "large_result", "large_value", "listen_notify", "concurrency"]


def main():
    cls, extra = CELLS[sys.argv[1]]
    cell = cls()
    for check in COMMON + extra:
        report(check, getattr(cell, check))
    print(json.dumps({"version": cell.version}), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
