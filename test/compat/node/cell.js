// The matrix's node-postgres cell (test/compat/README.md): pg with its
// pool, pg-copy-streams and pg-cursor, versions pinned in package.json and
// package-lock.json (scripts/deps/node.sh installs them).
//
//     node cell.js
//
// Where to connect comes from COMPAT_* variables; one JSON line per check
// on stdout, {"done": true} last.
'use strict'

const crypto = require('crypto')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')
const pg = require('pg')
const copyStreams = require('pg-copy-streams')
const Cursor = require('pg-cursor')

const env = process.env
const P = env.COMPAT_PREFIX
const SKIP = new Set((env.COMPAT_SKIP || '').split(',').filter(Boolean))
const CFG = {
  host: env.COMPAT_HOST,
  port: Number(env.COMPAT_PORT),
  user: env.COMPAT_USER,
  password: env.COMPAT_PASSWORD,
  database: env.COMPAT_DB,
  connectionTimeoutMillis: 10000,
}

class Skip extends Error {}

function expect(cond, msg) {
  if (!cond) throw new Error(msg)
}

async function connect() {
  const c = new pg.Client(CFG)
  await c.connect()
  return c
}

async function expectCode(promise, code, what) {
  try {
    await promise
  } catch (e) {
    expect(e.code === code, `${what}: want SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    return
  }
  throw new Error(`${what}: want SQLSTATE ${code}, got no error`)
}

async function report(check, fn) {
  if (SKIP.has(check)) return
  const began = Date.now()
  let out = { check, ok: true }
  try {
    await fn()
  } catch (e) {
    if (e instanceof Skip) out.skip = e.message
    else {
      out = { check, ok: false, detail: String(e && e.stack ? e.stack : e).slice(0, 3000) }
    }
  }
  out.ms = Date.now() - began
  console.log(JSON.stringify(out))
}

const BYTES = Buffer.from([...Array(512).keys()].map((i) => i % 256))
// node-postgres turns timestamptz into a Date: milliseconds.
const TS = new Date(Date.UTC(2026, 11, 2, 19, 20, 7, 123))
const VALUES = [
  -2147483648,
  '9007199254740993', // bigint comes back as a string
  '12345678901234567890.000000000123', // numeric too
  "héllo, 'quoted' \"text\" \\ ; -- not a comment",
  BYTES,
  TS,
  { a: 1.5, b: ['x', null] },
  { k: 'v', n: 2 },
  '4f1b9c3e-6b1d-4b8e-9c61-0a4e8f2d7c55',
  [1, -2, 3],
  ['a,b', 'c"d', '', '{}'],
  null,
]
// json parameters as their text: node-postgres would send an array
// parameter as a PostgreSQL array.
const PARAMS = VALUES.map((v, i) => (i === 6 || i === 7 ? JSON.stringify(v) : v))
const ECHO =
  'SELECT $1::int AS i, $2::bigint AS b, $3::numeric AS n, $4::text AS t, $5::bytea AS by, $6::timestamptz AS ts, ' +
  '$7::json AS j, $8::jsonb AS jb, $9::uuid AS u, $10::int[] AS ia, $11::text[] AS ta, $12::text AS nul'
const COLS = 'i int, b bigint, n numeric, t text, by bytea, ts timestamptz, j json, jb jsonb, u uuid, ia int[], ta text[], nul text'

function sameRow(row, what) {
  const got = [row.i, row.b, row.n, row.t, row.by, row.ts, row.j, row.jb, row.u, row.ia, row.ta, row.nul]
  const norm = (v) => (Buffer.isBuffer(v) ? 'bytes:' + v.toString('hex') : v instanceof Date ? 'date:' + v.toISOString() : v)
  const a = JSON.stringify(VALUES.map(norm))
  const b = JSON.stringify(got.map(norm))
  expect(a === b, `${what}: sent ${a}, got ${b}`)
}

async function ddl(c, ...stmts) {
  for (const s of stmts) await c.query(s)
}

const checks = {
  async types() {
    const c = await connect()
    try {
      sameRow((await c.query(ECHO, PARAMS)).rows[0], 'unnamed echo')
      for (let i = 0; i < 3; i++) {
        sameRow((await c.query({ name: P + 'echo', text: ECHO, values: PARAMS })).rows[0], 'named echo')
      }
      const t = P + 'types'
      await ddl(c, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, ${COLS})`)
      await c.query(`INSERT INTO ${t} VALUES (1, ${PARAMS.map((_, i) => '$' + (i + 1)).join(', ')})`, PARAMS)
      sameRow((await c.query(`SELECT * FROM ${t} WHERE id = $1`, [1])).rows[0], 'read back')
    } finally {
      await c.end()
    }
  },

  async tx_own_write() {
    const c = await connect()
    const t = P + 'tx'
    try {
      await ddl(c, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, v text)`)
      await c.query('BEGIN')
      await c.query(`INSERT INTO ${t} VALUES ($1, $2)`, [7, 'seven'])
      let r = await c.query(`SELECT v FROM ${t} WHERE id = $1`, [7])
      expect(r.rows.length === 1 && r.rows[0].v === 'seven', `inside the transaction: ${JSON.stringify(r.rows)}`)
      await c.query('COMMIT')
      r = await c.query(`SELECT v FROM ${t} WHERE id = $1`, [7])
      expect(r.rows.length === 1 && r.rows[0].v === 'seven', `after commit: ${JSON.stringify(r.rows)}`)
    } finally {
      await c.end()
    }
  },

  async ryw_same_conn() {
    const c = await connect()
    try {
      await ryw(c, c, P + 'ryw1')
    } finally {
      await c.end()
    }
  },

  async ryw_other_conn() {
    const w = await connect()
    const r = await connect()
    try {
      await ryw(w, r, P + 'ryw2')
    } finally {
      await w.end()
      await r.end()
    }
  },

  async error_rollback() {
    const c = await connect()
    const t = P + 'err'
    try {
      await ddl(c, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY)`, `INSERT INTO ${t} VALUES (1)`)
      await c.query('BEGIN')
      await c.query(`INSERT INTO ${t} VALUES ($1)`, [2])
      await expectCode(c.query(`INSERT INTO ${t} VALUES ($1)`, [1]), '23505', 'duplicate key')
      await expectCode(c.query('SELECT 1'), '25P02', 'after the error in the transaction')
      await c.query('ROLLBACK')
      const r = await c.query(`SELECT count(*)::int AS n FROM ${t}`)
      expect(r.rows[0].n === 1, `after rollback: want 1 row, got ${r.rows[0].n}`)
    } finally {
      await c.end()
    }
  },

  async cancel() {
    const c = await connect()
    try {
      // node-postgres' own cancel: a CancelRequest with the key the
      // server (here pgsplit) gave at login, from a second Client.
      const q = c.query(new pg.Query('SELECT pg_sleep(30)'))
      const done = new Promise((resolve) => {
        q.on('error', resolve)
        q.on('end', () => resolve(null))
      })
      const began = Date.now()
      setTimeout(() => new pg.Client(CFG).cancel(c, q), 500)
      const err = await done
      expect(err && err.code === '57014', `want SQLSTATE 57014, got ${err && err.code}: ${err && err.message}`)
      expect(Date.now() - began < 10000, 'the cancel took over 10s')
      const r = await c.query('SELECT 1 AS one')
      expect(r.rows[0].one === 1, 'next statement on the connection failed')
    } finally {
      await c.end()
    }
  },

  async large_result() {
    const c = await connect()
    try {
      const r = await c.query("SELECT g, repeat('x', 20) AS x FROM generate_series(1, $1::int) g", [100000])
      let sum = 0
      for (const row of r.rows) sum += row.g
      expect(r.rows.length === 100000 && sum === (100000 * 100001) / 2, `got ${r.rows.length} rows summing to ${sum}`)
    } finally {
      await c.end()
    }
  },

  async large_value() {
    const c = await connect()
    const t = P + 'blob'
    try {
      const blob = crypto.randomBytes(10 << 20)
      await ddl(c, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, b bytea)`)
      await c.query(`INSERT INTO ${t} VALUES (1, $1)`, [blob])
      const r = await c.query(`SELECT b, md5(b) AS m FROM ${t} WHERE id = 1`)
      expect(Buffer.compare(r.rows[0].b, blob) === 0, `10 MB bytea: ${r.rows[0].b.length} bytes back, different`)
      expect(r.rows[0].m === crypto.createHash('md5').update(blob).digest('hex'), 'md5 on the server differs')
    } finally {
      await c.end()
    }
  },

  async listen_notify() {
    const l = await connect()
    const n = await connect()
    const ch = P + 'chan'
    try {
      let timer
      const got = new Promise((resolve, reject) => {
        l.on('notification', resolve)
        timer = setTimeout(() => reject(new Error('no notification within 10s')), 10000)
      })
      await l.query(`LISTEN ${ch}`)
      await n.query('SELECT pg_notify($1, $2)', [ch, 'payload-1'])
      const note = await got.finally(() => clearTimeout(timer))
      expect(note.channel === ch && note.payload === 'payload-1', `got ${note.channel}/${note.payload}`)
      await l.query('UNLISTEN *')
    } finally {
      await l.end()
      await n.end()
    }
  },

  async concurrency() {
    const t = P + 'conc'
    const pool = new pg.Pool({ ...CFG, max: 50 })
    try {
      await ddl(pool, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, v int)`)
      const errors = []
      await Promise.all(
        [...Array(50).keys()].map(async (k) => {
          try {
            for (let i = 0; i < 20; i++) {
              const c = await pool.connect()
              try {
                const id = k * 20 + i
                await c.query('BEGIN')
                await c.query(`INSERT INTO ${t} VALUES ($1, $2)`, [id, k])
                const r = await c.query(`SELECT v FROM ${t} WHERE id = $1`, [id])
                expect(r.rows[0].v === k, `client ${k} row ${id}: got ${JSON.stringify(r.rows)}`)
                await c.query('COMMIT')
              } finally {
                c.release()
              }
            }
          } catch (e) {
            errors.push(`client ${k}: ${e.message}`)
          }
        }),
      )
      expect(errors.length === 0, `${errors.length} of 50 clients failed, first: ${errors[0]}`)
      const r = await pool.query(`SELECT count(*)::int AS n, count(DISTINCT v)::int AS d FROM ${t}`)
      expect(r.rows[0].n === 1000 && r.rows[0].d === 50, `want 1000 rows of 50 clients, got ${JSON.stringify(r.rows[0])}`)
    } finally {
      await pool.end()
    }
  },

  async named_prepared() {
    const t = P + 'named'
    const pool = new pg.Pool({ ...CFG, max: 8 })
    try {
      await ddl(pool, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, v text)`)
      const ins = { name: P + 'ins', text: `INSERT INTO ${t} VALUES ($1, $2) RETURNING id` }
      const sel = { name: P + 'sel', text: `SELECT v FROM ${t} WHERE id = $1` }
      await Promise.all(
        [...Array(16).keys()].map(async (k) => {
          for (let i = 0; i < 15; i++) {
            const id = k * 100 + i
            const r1 = await pool.query({ ...ins, values: [id, 'v' + id] })
            expect(r1.rows[0].id === id, `insert ${id}: ${JSON.stringify(r1.rows)}`)
            const r2 = await pool.query({ ...sel, values: [id] })
            expect(r2.rows.length === 1 && r2.rows[0].v === 'v' + id, `select ${id}: ${JSON.stringify(r2.rows)}`)
          }
        }),
      )
      const r = await pool.query(`SELECT count(*)::int AS n FROM ${t}`)
      expect(r.rows[0].n === 240, `want 240 rows, got ${r.rows[0].n}`)
    } finally {
      await pool.end()
    }
  },

  async copy() {
    const c = await connect()
    const t = P + 'copy'
    try {
      await ddl(c, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, name text)`)
      let data = ''
      for (let i = 0; i < 10000; i++) data += `${i}\tname ${i} \\\\ x\n`
      await pipeline(Readable.from([data]), c.query(copyStreams.from(`COPY ${t} (id, name) FROM STDIN`)))
      const chunks = []
      await pipeline(
        c.query(copyStreams.to(`COPY (SELECT id, name FROM ${t} ORDER BY id) TO STDOUT`)),
        new Writable({
          write(chunk, _, cb) {
            chunks.push(chunk)
            cb()
          },
        }),
      )
      const back = Buffer.concat(chunks).toString()
      expect(back === data, `COPY TO gave ${back.length} bytes, COPY FROM sent ${data.length}`)
    } finally {
      await c.end()
    }
  },

  async cursor() {
    const c = await connect()
    try {
      await c.query('BEGIN')
      const cur = c.query(new Cursor('SELECT g FROM generate_series(1, $1::int) g', [100000]))
      let n = 0
      let sum = 0
      for (;;) {
        const rows = await cur.read(2000)
        if (rows.length === 0) break
        for (const r of rows) {
          n++
          sum += r.g
        }
      }
      await cur.close()
      await c.query('COMMIT')
      expect(n === 100000 && sum === (100000 * 100001) / 2, `cursor: ${n} rows summing to ${sum}`)
    } finally {
      await c.end()
    }
  },

  async pool_reuse() {
    const pool = new pg.Pool({ ...CFG, max: 20 })
    let opened = 0
    pool.on('connect', () => opened++)
    try {
      const errors = []
      await Promise.all(
        [...Array(100).keys()].map(async (k) => {
          for (let i = 0; i < 20; i++) {
            const want = `${k}-${i}`
            try {
              const r = await pool.query('SELECT $1::text AS v', [want])
              expect(r.rows[0].v === want, `want ${want}, got ${r.rows[0].v}`)
            } catch (e) {
              errors.push(e.message)
            }
          }
        }),
      )
      expect(errors.length === 0, `${errors.length} of 2000 queries failed, first: ${errors[0]}`)
      expect(opened <= 20, `the pool opened ${opened} connections (max 20)`)
    } finally {
      await pool.end()
    }
  },
}

async function ryw(w, r, t) {
  await ddl(w, `DROP TABLE IF EXISTS ${t}`, `CREATE TABLE ${t} (id int PRIMARY KEY, v int)`, `INSERT INTO ${t} VALUES (1, 0)`)
  for (let i = 1; i <= 20; i++) {
    await w.query(`INSERT INTO ${t} VALUES ($1, $1)`, [i + 1])
    await w.query(`UPDATE ${t} SET v = $1 WHERE id = 1`, [i])
    const got = await r.query(`SELECT v, (SELECT count(*)::int FROM ${t}) AS n FROM ${t} WHERE id = 1`)
    const row = got.rows[0]
    expect(row.v === i && row.n === i + 1, `round ${i}: stale read: want v=${i} and ${i + 1} rows, got ${JSON.stringify(row)}`)
  }
}

async function main() {
  for (const [name, fn] of Object.entries(checks)) {
    await report(name, fn)
  }
  const v = (pkg) => JSON.parse(require('fs').readFileSync(require('path').join(__dirname, 'node_modules', pkg, 'package.json'))).version
  console.log(JSON.stringify({ version: `pg ${v('pg')}, pg-copy-streams ${v('pg-copy-streams')}, pg-cursor ${v('pg-cursor')}, Node ${process.versions.node}` }))
  console.log(JSON.stringify({ done: true }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
