"""Write-then-read cycles through pgsplit with psycopg2 and SQLAlchemy.

Run by test/ryw_test.go with Debian's /usr/bin/python3 (python3-psycopg2,
python3-sqlalchemy). Each cycle inserts a fresh key and reads it back at
once on another connection, the way a pooled application does: the write
is committed on one connection, the read runs on a second one inside the
implicit BEGIN ... COMMIT/ROLLBACK that psycopg2 wraps around every
operation. The read also returns inet_server_port(), so the caller knows
which server answered. Prints one JSON object on stdout:

    {"cycles": N, "stale": S, "ports": {"5432": n, ...}, "read_ms": [...], "errors": [...]}

Variants:
  psycopg2    two plain psycopg2 connections (writer and reader).
  sqlalchemy  an Engine with a QueuePool (pool_size=10, max_overflow=20,
              pool_timeout=30, pool_recycle=3600, pool_pre_ping=True);
              each cycle checks out a reader, then writes in
              engine.begin() on another pooled connection, then reads.
"""

import argparse
import json
import re
import sys
import time

import psycopg2
import psycopg2.extensions


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True, help="libpq keyword/value connection string to pgsplit")
    p.add_argument("--table", required=True)
    p.add_argument("--variant", choices=["psycopg2", "sqlalchemy"], required=True)
    p.add_argument("--cycles", type=int, required=True)
    p.add_argument("--first-id", type=int, required=True)
    a = p.parse_args()
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", a.table):
        p.error("bad table name %r" % a.table)
    return a


class Result:
    def __init__(self):
        self.cycles = 0
        self.stale = 0
        self.ports = {}
        self.read_ms = []
        self.errors = []

    def record(self, want, row, took):
        got, port = row
        self.cycles += 1
        self.ports[str(port)] = self.ports.get(str(port), 0) + 1
        self.read_ms.append(took * 1000.0)
        if got is None:
            self.stale += 1
        elif got != want:
            self.errors.append("read %r, want %r" % (got, want))

    def dump(self):
        json.dump({"cycles": self.cycles, "stale": self.stale, "ports": self.ports,
                   "read_ms": self.read_ms, "errors": self.errors}, sys.stdout)
        sys.stdout.write("\n")


def run_psycopg2(a, res):
    insert = "INSERT INTO %s (id, v) VALUES (%%s, %%s)" % a.table
    select = "SELECT (SELECT v FROM %s WHERE id = %%s), inet_server_port()" % a.table
    w = psycopg2.connect(a.dsn)
    r = psycopg2.connect(a.dsn)
    try:
        for i in range(a.cycles):
            key = a.first_id + i
            want = "v-%d" % key
            with w.cursor() as cur:  # psycopg2 sends BEGIN first
                cur.execute(insert, (key, want))
            w.commit()
            began = time.monotonic()
            with r.cursor() as cur:  # BEGIN; SELECT ...
                cur.execute(select, (key,))
                row = cur.fetchone()
            r.commit()  # COMMIT
            res.record(want, row, time.monotonic() - began)
    finally:
        w.close()
        r.close()


def run_sqlalchemy(a, res):
    import sqlalchemy
    from sqlalchemy import text

    params = psycopg2.extensions.parse_dsn(a.dsn)
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg2",
        username=params.pop("user"),
        password=params.pop("password", None),
        host=params.pop("host"),
        port=int(params.pop("port")),
        database=params.pop("dbname"),
        query=params,  # sslmode, connect_timeout, ...
    )
    engine = sqlalchemy.create_engine(
        url, future=True, pool_size=10, max_overflow=20, pool_timeout=30,
        pool_recycle=3600, pool_pre_ping=True)
    insert = text("INSERT INTO %s (id, v) VALUES (:id, :v)" % a.table)
    select = text("SELECT (SELECT v FROM %s WHERE id = :id), inet_server_port()" % a.table)
    try:
        for i in range(a.cycles):
            key = a.first_id + i
            want = "v-%d" % key
            # The reader is checked out first, so the write below runs on
            # another pooled connection: two requests of one application.
            with engine.connect() as reader:
                with engine.begin() as writer:  # BEGIN; INSERT; COMMIT
                    writer.execute(insert, {"id": key, "v": want})
                began = time.monotonic()
                row = reader.execute(select, {"id": key}).one()  # BEGIN; SELECT
                reader.rollback()  # ROLLBACK, as a read-only request ends
                res.record(want, tuple(row), time.monotonic() - began)
    finally:
        engine.dispose()


def main():
    a = parse_args()
    res = Result()
    try:
        if a.variant == "psycopg2":
            run_psycopg2(a, res)
        else:
            run_sqlalchemy(a, res)
    except Exception as e:  # reported to the Go test, which fails on it
        res.errors.append("%s: %s" % (type(e).__name__, e))
    res.dump()


if __name__ == "__main__":
    main()
