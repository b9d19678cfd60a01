'use strict'
// The node-pg cell of pgsplit's compatibility matrix (test/compat/README.md):
// node-postgres (pg, pg-pool, pg-copy-streams, pg-cursor; versions pinned in
// package.json) runs every common check and its own extra ones against
// COMPAT_HOST:COMPAT_PORT, one JSON line per check on stdout, then
// {"done": true}. Chatter goes to stderr.

const crypto = require('node:crypto')
const util = require('node:util')
const { pipeline } = require('node:stream/promises')
const { Readable, Writable } = require('node:stream')
const pg = require('pg')
const Cursor = require('pg-cursor')
const copyStreams = require('pg-copy-streams')

const env = process.env
const prefix = env.COMPAT_PREFIX || 'c_node_pg_local_'
const skip = new Set((env.COMPAT_SKIP || '').split(',').filter(Boolean))
const cfg = {
  host: env.COMPAT_HOST || '127.0.0.1',
  port: Number(env.COMPAT_PORT || 5432),
  user: env.COMPAT_USER,
  password: env.COMPAT_PASSWORD,
  database: env.COMPAT_DB,
  application_name: 'compat-node-pg',
}

class Skip extends Error {}

// fail throws the check's failure: what was expected and what came.
function fail(what, expected, got) {
  throw new Error(`${what}: expected ${show(expected)}, got ${show(got)}`)
}

function show(v) {
  if (Buffer.isBuffer(v)) {
    return v.length > 32 ? `Buffer(${v.length}) ${v.subarray(0, 16).toString('hex')}…` : `Buffer ${v.toString('hex')}`
  }
  if (v instanceof Date) return `Date ${isNaN(v) ? 'invalid' : v.toISOString()}`
  if (v instanceof Error) return `error ${v.code ? v.code + ' ' : ''}${v.message}`
  const s = util.inspect(v, { depth: 5, breakLength: Infinity })
  return s.length > 300 ? s.slice(0, 300) + '…' : s
}

function eq(what, expected, got) {
  if (!util.isDeepStrictEqual(expected, got)) fail(what, expected, got)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout(p, ms, what) {
  let timer
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

// connect opens a client and remembers it, so a check that fails half-way
// does not leave it open.
const open = new Set()
async function connect(extra) {
  const c = new pg.Client({ ...cfg, ...extra })
  c.on('error', (err) => process.stderr.write(`client error: ${err.message}\n`))
  await c.connect()
  open.add(c)
  return c
}
async function close(c) {
  open.delete(c)
  await c.end().catch(() => {})
}
const pools = new Set()
function newPool(opts) {
  const p = new pg.Pool({ ...cfg, ...opts })
  p.on('error', (err) => process.stderr.write(`pool error: ${err.message}\n`))
  pools.add(p)
  return p
}
async function closePool(p) {
  pools.delete(p)
  await p.end().catch(() => {})
}
async function closeAll() {
  for (const c of [...open]) await close(c)
  for (const p of [...pools]) await closePool(p)
}

// recreate drops and creates a table of this run.
async function recreate(c, name, columns) {
  await c.query(`DROP TABLE IF EXISTS ${prefix}${name}`)
  await c.query(`CREATE TABLE ${prefix}${name} (${columns})`)
  return prefix + name
}

// ---- types ----------------------------------------------------------------

const typeCols = [
  ['i', 'int'], ['b', 'bigint'], ['n', 'numeric'], ['t', 'text'], ['by', 'bytea'],
  ['ts', 'timestamptz'], ['j', 'json'], ['jb', 'jsonb'], ['u', 'uuid'],
  ['ia', 'int[]'], ['ta', 'text[]'], ['nl', 'text'],
]
const typeVals = {
  i: -2147483648,
  b: '9007199254740993', // past Number.MAX_SAFE_INTEGER: pg gives int8 as a string
  n: '-12345678901234567890.123456789000', // numeric as a string, scale kept
  t: `héllo 'single' "double" \\ back, ünïcode ✓ 𝄞 tab\there`,
  by: Buffer.from([...Array(256).keys()]),
  ts: new Date('2024-02-29T23:59:58.123Z'),
  j: { a: 1, b: [1, 2.5, 'x', null], c: { d: 'é' }, e: null },
  jb: { z: true, a: [{ k: 'v' }], n: -3.25 },
  u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  ia: [1, -2, null, 2147483647],
  ta: ['a', 'b c', 'quo"te', 'com,ma', 'back\\slash', '', null, 'NULL'],
  nl: null,
}
// what a value is sent as: json/jsonb as JSON text (pg would turn an
// array into a PostgreSQL array literal), the rest as pg prepares it.
function param(col) {
  const v = typeVals[col]
  return col === 'j' || col === 'jb' ? JSON.stringify(v) : v
}

function checkTypeRow(what, row) {
  for (const [col] of typeCols) {
    const want = typeVals[col]
    const got = row[col]
    if (col === 'ts') {
      if (!(got instanceof Date) || got.getTime() !== want.getTime()) fail(`${what} ${col}`, want, got)
    } else if (col === 'by') {
      if (!Buffer.isBuffer(got) || !got.equals(want)) fail(`${what} ${col}`, want, got)
    } else {
      eq(`${what} ${col}`, want, got)
    }
  }
}

// literal is a value as SQL text for the simple-query form.
function literal(c, col) {
  const v = typeVals[col]
  const type = typeCols.find(([n]) => n === col)[1]
  if (v === null) return `NULL::${type}`
  let s
  switch (col) {
    case 'by': s = '\\x' + v.toString('hex'); break
    case 'ts': s = v.toISOString(); break
    case 'j': case 'jb': s = JSON.stringify(v); break
    case 'ia': s = '{' + v.map((x) => (x === null ? 'NULL' : String(x))).join(',') + '}'; break
    case 'ta': s = '{' + v.map((x) => (x === null ? 'NULL' : '"' + x.replace(/[\\"]/g, '\\$&') + '"')).join(',') + '}'; break
    default: s = String(v)
  }
  return `${c.escapeLiteral(s)}::${type}`
}

async function checkTypes() {
  const c = await connect()
  try {
    const table = await recreate(c, 'types', 'id int PRIMARY KEY, ' + typeCols.map(([n, t]) => `${n} ${t}`).join(', '))
    const select = 'SELECT ' + typeCols.map(([n, t], k) => `$${k + 1}::${t} AS ${n}`).join(', ')
    const values = typeCols.map(([n]) => param(n))
    // unprepared: the unnamed statement, parsed each time
    checkTypeRow('unnamed statement', (await c.query(select, values)).rows[0])
    // prepared: a named statement, parsed once and bound twice
    for (const round of [1, 2]) {
      checkTypeRow(`named statement (round ${round})`, (await c.query({ name: 'compat_types_sel', text: select, values })).rows[0])
    }
    // the simple query protocol, values as literals
    const simple = 'SELECT ' + typeCols.map(([n]) => `${literal(c, n)} AS ${n}`).join(', ')
    checkTypeRow('simple query', (await c.query(simple)).rows[0])
    // a row written (named and unnamed) and read back
    const cols = typeCols.map(([n]) => n).join(', ')
    const ins = `INSERT INTO ${table} (id, ${cols}) VALUES ($1, ${typeCols.map((_, k) => `$${k + 2}`).join(', ')})`
    await c.query({ name: 'compat_types_ins', text: ins, values: [1, ...values] })
    await c.query(ins, [2, ...values])
    const back = await c.query(`SELECT id, ${cols} FROM ${table} ORDER BY id`)
    eq('rows written', [1, 2], back.rows.map((r) => r.id))
    for (const r of back.rows) checkTypeRow(`row ${r.id} read back`, r)
    const named = await c.query({ name: 'compat_types_get', text: `SELECT ${cols} FROM ${table} WHERE id = $1`, values: [1] })
    eq('named read back rows', 1, named.rowCount)
    checkTypeRow('row read back by a named statement', named.rows[0])
    // NULL as a parameter and the types PostgreSQL reports
    const nul = await c.query('SELECT $1::int IS NULL AS isnull, pg_typeof($2::bigint)::text AS ty', [null, '1'])
    eq('NULL parameter', { isnull: true, ty: 'bigint' }, nul.rows[0])
  } finally {
    await close(c)
  }
}

// ---- transactions and read-your-writes ------------------------------------

async function checkTxOwnWrite() {
  const c = await connect()
  try {
    const table = await recreate(c, 'tx', 'id int PRIMARY KEY, v text')
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${table} VALUES ($1, $2)`, [1, 'own'])
    const inside = await c.query(`SELECT v FROM ${table} WHERE id = $1`, [1])
    eq('row seen inside the transaction', [{ v: 'own' }], inside.rows)
    await c.query('COMMIT')
    const after = await c.query(`SELECT v FROM ${table} WHERE id = $1`, [1])
    eq('row after COMMIT, same connection', [{ v: 'own' }], after.rows)
    const other = await connect()
    try {
      const o = await other.query(`SELECT count(*)::int AS n FROM ${table}`)
      eq('rows after COMMIT, another connection', 1, o.rows[0].n)
    } finally {
      await close(other)
    }
  } finally {
    await close(c)
  }
}

async function checkRywSameConn() {
  const c = await connect()
  try {
    const table = await recreate(c, 'ryw_same', 'id int PRIMARY KEY, v int')
    for (let r = 1; r <= 20; r++) {
      await c.query(`INSERT INTO ${table} VALUES ($1, $2)`, [r, r])
      const a = await c.query(`SELECT v FROM ${table} WHERE id = $1`, [r])
      eq(`round ${r}: value after INSERT`, [{ v: r }], a.rows)
      await c.query(`UPDATE ${table} SET v = $2 WHERE id = $1`, [r, r * 10])
      const b = await c.query(`SELECT v FROM ${table} WHERE id = $1`, [r])
      eq(`round ${r}: value after UPDATE`, [{ v: r * 10 }], b.rows)
    }
    const n = await c.query(`SELECT count(*)::int AS n, sum(v)::int AS s FROM ${table}`)
    eq('count and sum', { n: 20, s: 2100 }, n.rows[0])
  } finally {
    await close(c)
  }
}

async function checkRywOtherConn() {
  const w = await connect()
  const r = await connect()
  const pool = newPool({ max: 4 })
  try {
    const table = await recreate(w, 'ryw_other', 'id int PRIMARY KEY, v int')
    for (let k = 1; k <= 20; k++) {
      await w.query(`INSERT INTO ${table} VALUES ($1, $2)`, [k, k])
      const a = await r.query(`SELECT v FROM ${table} WHERE id = $1`, [k])
      eq(`round ${k}: INSERT on one connection, read on another`, [{ v: k }], a.rows)
      await pool.query(`UPDATE ${table} SET v = $2 WHERE id = $1`, [k, -k])
      const b = await r.query(`SELECT v FROM ${table} WHERE id = $1`, [k])
      eq(`round ${k}: UPDATE through the pool, read on another connection`, [{ v: -k }], b.rows)
      const p = await pool.query(`SELECT v FROM ${table} WHERE id = $1`, [k])
      eq(`round ${k}: read through the pool`, [{ v: -k }], p.rows)
    }
  } finally {
    await close(w)
    await close(r)
    await closePool(pool)
  }
}

async function checkErrorRollback() {
  const c = await connect()
  try {
    const table = await recreate(c, 'err', 'id int PRIMARY KEY')
    await c.query(`INSERT INTO ${table} VALUES (1)`)
    await c.query('BEGIN')
    await c.query(`INSERT INTO ${table} VALUES (2)`)
    let err = null
    try {
      await c.query(`INSERT INTO ${table} VALUES ($1)`, [1])
    } catch (e) {
      err = e
    }
    if (!err || err.code !== '23505') fail('duplicate key INSERT', 'SQLSTATE 23505', err || 'no error')
    let aborted = null
    try {
      await c.query('SELECT 1')
    } catch (e) {
      aborted = e
    }
    if (!aborted || aborted.code !== '25P02') fail('statement in the failed transaction', 'SQLSTATE 25P02', aborted || 'no error')
    await c.query('ROLLBACK')
    const rows = await c.query(`SELECT id FROM ${table} ORDER BY id`)
    eq('rows after ROLLBACK', [{ id: 1 }], rows.rows)
    const ok = await c.query('SELECT $1::int + 1 AS v', [41])
    eq('connection works after ROLLBACK', 42, ok.rows[0].v)
  } finally {
    await close(c)
  }
}

// ---- cancel ---------------------------------------------------------------

// node-postgres's cancel: Client.prototype.cancel(client, query), called on
// a fresh, unconnected Client, opens a connection to the same host and port
// and sends the CancelRequest with the key the target got in BackendKeyData.
function sendCancel(target, query) {
  const canceller = new pg.Client(cfg)
  canceller.connection.on('error', (err) => process.stderr.write(`cancel connection: ${err.message}\n`))
  canceller.cancel(target, query)
}

async function checkCancel() {
  const c = await connect()
  try {
    let query
    const done = new Promise((resolve) => {
      query = new pg.Query('SELECT pg_sleep(30)', [], (err, res) => resolve({ err, res, at: Date.now() }))
    })
    const began = Date.now()
    c.query(query)
    await sleep(500)
    if (c.activeQuery !== query) fail('query running after 0.5 s', 'the pg_sleep query active', c.activeQuery)
    sendCancel(c, query)
    const out = await withTimeout(done, 10000, 'SELECT pg_sleep(30) after the CancelRequest')
    if (!out.err) fail('cancelled pg_sleep(30)', 'SQLSTATE 57014', `success ${show(out.res && out.res.rows)}`)
    if (out.err.code !== '57014') fail('cancelled pg_sleep(30)', 'SQLSTATE 57014', out.err)
    const took = out.at - began
    if (took > 10500) fail('time to cancel', '< 10 s', `${took} ms`)
    const next = await withTimeout(c.query('SELECT $1::text AS v', ['after']), 10000, 'statement after the cancel')
    eq('statement after the cancel', [{ v: 'after' }], next.rows)
    // the key still works for a second statement (a cancel is per query)
    let q2
    const done2 = new Promise((resolve) => {
      q2 = new pg.Query('SELECT pg_sleep(30)', [], (err) => resolve(err))
    })
    c.query(q2)
    await sleep(300)
    sendCancel(c, q2)
    const err2 = await withTimeout(done2, 10000, 'second cancel')
    if (!err2 || err2.code !== '57014') fail('second cancel on the same connection', 'SQLSTATE 57014', err2 || 'success')
    const last = await c.query('SELECT 7 AS v')
    eq('statement after the second cancel', [{ v: 7 }], last.rows)
  } finally {
    await close(c)
  }
}

// ---- size -----------------------------------------------------------------

async function checkLargeResult() {
  const c = await connect()
  try {
    const res = await c.query('SELECT n, md5(n::text) AS h FROM generate_series(1, 100000) AS n')
    eq('rows', 100000, res.rows.length)
    let sum = 0
    for (const r of res.rows) sum += r.n
    eq('sum of n', 5000050000, sum)
    eq('last row', { n: 100000, h: crypto.createHash('md5').update('100000').digest('hex') }, res.rows[99999])
  } finally {
    await close(c)
  }
}

async function checkLargeValue() {
  const c = await connect()
  try {
    const table = await recreate(c, 'big', 'id int PRIMARY KEY, v bytea')
    const v = crypto.randomBytes(10 * 1024 * 1024)
    const md5 = crypto.createHash('md5').update(v).digest('hex')
    await c.query(`INSERT INTO ${table} VALUES ($1, $2)`, [1, v])
    const h = await c.query(`SELECT md5(v) AS h, length(v) AS n FROM ${table} WHERE id = 1`)
    eq('md5 and length on the server', { h: md5, n: v.length }, h.rows[0])
    const back = await c.query(`SELECT v FROM ${table} WHERE id = $1`, [1])
    const got = back.rows[0] && back.rows[0].v
    if (!Buffer.isBuffer(got) || !got.equals(v)) fail('10 MB bytea read back', v, got)
  } finally {
    await close(c)
  }
}

// ---- LISTEN/NOTIFY --------------------------------------------------------

async function checkListenNotify() {
  const l = await connect()
  const n = await connect()
  try {
    const channel = prefix + 'chan'
    const payload = `hello ✓ ${crypto.randomUUID()}`
    const got = new Promise((resolve) => {
      l.on('notification', (msg) => {
        if (msg.channel === channel) resolve(msg)
      })
    })
    await l.query(`LISTEN ${channel}`)
    await n.query('SELECT pg_notify($1, $2)', [channel, payload])
    const msg = await withTimeout(got, 10000, `notification on ${channel}`)
    eq('payload', payload, msg.payload)
    // a second one with NOTIFY, after other traffic on the listener
    await l.query('SELECT 1')
    const got2 = new Promise((resolve) => {
      l.on('notification', (m) => {
        if (m.channel === channel && m.payload === 'second') resolve(m)
      })
    })
    await n.query(`NOTIFY ${channel}, 'second'`)
    await withTimeout(got2, 10000, 'second notification (NOTIFY)')
  } finally {
    await close(l)
    await close(n)
  }
}

// ---- concurrency ----------------------------------------------------------

async function checkConcurrency() {
  const setup = await connect()
  const table = await recreate(setup, 'conc', 'worker int, k int, v text, PRIMARY KEY (worker, k)')
  await close(setup)
  const pool = newPool({ max: 50, connectionTimeoutMillis: 60000 })
  try {
    // all 50 pool members checked out at once, then 20 transactions each
    const clients = await Promise.all([...Array(50).keys()].map(() => pool.connect()))
    eq('pool members connected at once', 50, pool.totalCount)
    const errors = []
    await Promise.all(clients.map(async (c, w) => {
      try {
        for (let k = 0; k < 20; k++) {
          await c.query('BEGIN')
          await c.query(`INSERT INTO ${table} VALUES ($1, $2, $3)`, [w, k, `w${w}k${k}`])
          const r = await c.query(`SELECT v FROM ${table} WHERE worker = $1 AND k = $2`, [w, k])
          await c.query('COMMIT')
          eq(`worker ${w} transaction ${k} read back`, [{ v: `w${w}k${k}` }], r.rows)
        }
      } catch (e) {
        errors.push(`worker ${w}: ${e.code ? e.code + ' ' : ''}${e.message}`)
        await c.query('ROLLBACK').catch(() => {})
      } finally {
        c.release()
      }
    }))
    if (errors.length) throw new Error(`${errors.length} of 50 workers failed: ${errors.slice(0, 3).join('; ')}`)
    const n = await pool.query(`SELECT count(*)::int AS n, count(DISTINCT worker)::int AS w FROM ${table}`)
    eq('rows written', { n: 1000, w: 50 }, n.rows[0])
  } finally {
    await closePool(pool)
  }
}

// ---- extras ---------------------------------------------------------------

// named_prepared: queries with name:, so node-postgres parses each once per
// connection and then only binds it; many times, varying parameters, over
// pooled clients, two different texts under two names, and a named write.
async function checkNamedPrepared() {
  const setup = await connect()
  const table = await recreate(setup, 'named', 'id int PRIMARY KEY, v text')
  await close(setup)
  const pool = newPool({ max: 5 })
  try {
    const errors = []
    await Promise.all([...Array(40).keys()].map(async (task) => {
      try {
        for (let k = 0; k < 10; k++) {
          const x = task * 100 + k
          const a = await pool.query({ name: 'compat_np_mul', text: 'SELECT $1::int * 2 AS v, $2::text AS t', values: [x, `t${x}`] })
          eq(`compat_np_mul(${x})`, [{ v: x * 2, t: `t${x}` }], a.rows)
          const b = await pool.query({ name: 'compat_np_cat', text: 'SELECT $1::text || $2::text AS s, $3::bigint + 1 AS b', values: ['a', String(x), String(x)] })
          eq(`compat_np_cat(${x})`, [{ s: `a${x}`, b: String(x + 1) }], b.rows)
          await pool.query({ name: 'compat_np_ins', text: `INSERT INTO ${table} VALUES ($1, $2)`, values: [x, `v${x}`] })
          const c = await pool.query({ name: 'compat_np_get', text: `SELECT v FROM ${table} WHERE id = $1`, values: [x] })
          eq(`compat_np_get(${x})`, [{ v: `v${x}` }], c.rows)
        }
      } catch (e) {
        errors.push(`task ${task}: ${e.code ? e.code + ' ' : ''}${e.message}`)
      }
    }))
    if (errors.length) throw new Error(`${errors.length} of 40 tasks failed: ${errors.slice(0, 3).join('; ')}`)
    const n = await pool.query(`SELECT count(*)::int AS n FROM ${table}`)
    eq('rows written by the named INSERT', 400, n.rows[0].n)
    // inside a transaction too, and a named statement's error keeps the
    // connection usable with its other statements
    const c = await pool.connect()
    try {
      await c.query('BEGIN')
      const a = await c.query({ name: 'compat_np_mul', text: 'SELECT $1::int * 2 AS v, $2::text AS t', values: [21, 'tx'] })
      eq('named statement inside a transaction', [{ v: 42, t: 'tx' }], a.rows)
      await c.query('COMMIT')
      let err = null
      try {
        await c.query({ name: 'compat_np_div', text: 'SELECT 1 / $1::int AS v', values: [0] })
      } catch (e) {
        err = e
      }
      if (!err || err.code !== '22012') fail('named 1/0', 'SQLSTATE 22012', err || 'success')
      const d = await c.query({ name: 'compat_np_div', text: 'SELECT 1 / $1::int AS v', values: [1] })
      eq('named statement after its error', [{ v: 1 }], d.rows)
    } finally {
      c.release()
    }
  } finally {
    await closePool(pool)
  }
}

async function checkCopy() {
  const c = await connect()
  try {
    const table = await recreate(c, 'copy', 'id int PRIMARY KEY, v text, b bytea')
    const n = 20000
    const lines = []
    for (let i = 1; i <= n; i++) lines.push(`${i}\tline ${i} ü\t\\\\x${(i % 256).toString(16).padStart(2, '0')}\n`)
    const text = lines.join('')
    // COPY FROM STDIN in chunks
    const chunks = []
    for (let i = 0; i < lines.length; i += 1000) chunks.push(lines.slice(i, i + 1000).join(''))
    const from = c.query(copyStreams.from(`COPY ${table} (id, v, b) FROM STDIN`))
    await pipeline(Readable.from(chunks), from)
    eq('rows COPY FROM reported', n, from.rowCount)
    const s = await c.query(`SELECT count(*)::int AS n, sum(id)::bigint AS s, max(v) FILTER (WHERE id = 7) AS v7, (SELECT b FROM ${table} WHERE id = 255) AS b255 FROM ${table}`)
    eq('count, sum, a value', { n, s: String((n * (n + 1)) / 2), v7: 'line 7 ü', b255: Buffer.from([0xff]) }, s.rows[0])
    // COPY TO STDOUT gives the same text back
    const parts = []
    const to = c.query(copyStreams.to(`COPY (SELECT id, v, b FROM ${table} ORDER BY id) TO STDOUT`))
    await pipeline(to, new Writable({
      write(chunk, _enc, cb) { parts.push(chunk); cb() },
    }))
    const out = Buffer.concat(parts).toString('utf8')
    if (out !== text) {
      const at = [...out].findIndex((ch, k) => ch !== text[k])
      fail('COPY TO STDOUT text', `${text.length} chars like ${show(text.slice(0, 40))}`, `${out.length} chars, first difference at ${at}: ${show(out.slice(Math.max(0, at - 20), at + 20))}`)
    }
    // a COPY FROM with a bad row fails with 22P02 and the connection works
    let err = null
    try {
      await pipeline(Readable.from(['1000001\tok\t\\\\x00\n', 'notanumber\tbad\t\\\\x00\n']), c.query(copyStreams.from(`COPY ${table} FROM STDIN`)))
    } catch (e) {
      err = e
    }
    if (!err || err.code !== '22P02') fail('COPY FROM with a bad row', 'SQLSTATE 22P02', err || 'success')
    const after = await c.query(`SELECT count(*)::int AS n FROM ${table}`)
    eq('rows after the failed COPY', n, after.rows[0].n)
  } finally {
    await close(c)
  }
}

async function checkCursor() {
  const c = await connect()
  try {
    await c.query('BEGIN')
    const cursor = c.query(new Cursor('SELECT n, n::text AS t FROM generate_series(1, $1::int) AS n', [100000]))
    const read = util.promisify(cursor.read.bind(cursor))
    let count = 0
    let sum = 0
    let batches = 0
    let expectNext = 1
    for (;;) {
      const rows = await read(1000)
      if (rows.length === 0) break
      if (rows.length > 1000) fail(`batch ${batches + 1} size`, '<= 1000', rows.length)
      batches++
      for (const r of rows) {
        if (r.n !== expectNext || r.t !== String(expectNext)) fail(`row ${count + 1}`, { n: expectNext, t: String(expectNext) }, r)
        expectNext++
        count++
        sum += r.n
      }
    }
    await util.promisify(cursor.close.bind(cursor))()
    eq('rows, sum, batches', { count: 100000, sum: 5000050000, batches: 100 }, { count, sum, batches })
    const still = await c.query('SELECT txid_current_if_assigned() IS NULL AS ro, 1 AS one')
    eq('statement in the same transaction after the cursor', [{ ro: true, one: 1 }], still.rows)
    await c.query('COMMIT')
  } finally {
    await close(c)
  }
}

// pool_reuse: pg.Pool with max 20 used by 100 concurrent async tasks, each
// through pool.query and through a checked-out client's transaction.
async function checkPoolReuse() {
  const setup = await connect()
  const table = await recreate(setup, 'reuse', 'task int, k int, v int, PRIMARY KEY (task, k)')
  await close(setup)
  const pool = newPool({ max: 20, connectionTimeoutMillis: 60000 })
  try {
    let maxTotal = 0
    const errors = []
    await Promise.all([...Array(100).keys()].map(async (task) => {
      try {
        for (let k = 0; k < 5; k++) {
          const a = await pool.query('SELECT $1::int + $2::int AS v', [task, k])
          eq(`task ${task} round ${k} pool.query`, [{ v: task + k }], a.rows)
          const c = await pool.connect()
          maxTotal = Math.max(maxTotal, pool.totalCount)
          try {
            await c.query('BEGIN')
            await c.query(`INSERT INTO ${table} VALUES ($1, $2, $3)`, [task, k, task * k])
            const r = await c.query(`SELECT v FROM ${table} WHERE task = $1 AND k = $2`, [task, k])
            await c.query('COMMIT')
            eq(`task ${task} round ${k} read back`, [{ v: task * k }], r.rows)
          } catch (e) {
            await c.query('ROLLBACK').catch(() => {})
            throw e
          } finally {
            c.release()
          }
        }
      } catch (e) {
        errors.push(`task ${task}: ${e.code ? e.code + ' ' : ''}${e.message}`)
      }
    }))
    if (errors.length) throw new Error(`${errors.length} of 100 tasks failed: ${errors.slice(0, 3).join('; ')}`)
    if (maxTotal > 20) fail('pool size', '<= 20', maxTotal)
    const s = await pool.query(`SELECT count(*)::int AS n, sum(v)::int AS s FROM ${table}`)
    eq('rows and sum', { n: 500, s: 4950 * 10 }, s.rows[0])
  } finally {
    await closePool(pool)
  }
}

const checks = [
  ['types', checkTypes],
  ['tx_own_write', checkTxOwnWrite],
  ['ryw_same_conn', checkRywSameConn],
  ['ryw_other_conn', checkRywOtherConn],
  ['error_rollback', checkErrorRollback],
  ['cancel', checkCancel],
  ['large_result', checkLargeResult],
  ['large_value', checkLargeValue],
  ['listen_notify', checkListenNotify],
  ['concurrency', checkConcurrency],
  ['named_prepared', checkNamedPrepared],
  ['copy', checkCopy],
  ['cursor', checkCursor],
  ['pool_reuse', checkPoolReuse],
]

async function main() {
  const only = new Set(process.argv.slice(2))
  for (const [name, fn] of checks) {
    if (skip.has(name) || (only.size && !only.has(name))) continue
    const began = process.hrtime.bigint()
    const out = { check: name, ok: true }
    try {
      await withTimeout(fn(), 90000, name)
    } catch (e) {
      if (e instanceof Skip) {
        out.skip = e.message
      } else {
        out.ok = false
        out.detail = e.code && !e.message.includes(e.code) ? `${e.code} ${e.message}` : e.message
        process.stderr.write(`${name}: ${e.stack}\n`)
      }
    }
    await closeAll()
    out.ms = Math.round(Number(process.hrtime.bigint() - began) / 1e4) / 100
    process.stdout.write(JSON.stringify(out) + '\n')
  }
  const v = (pkg) => JSON.parse(require('fs').readFileSync(require('path').join(__dirname, 'node_modules', pkg, 'package.json'))).version
  process.stdout.write(JSON.stringify({ version: `pg ${v('pg')}, pg-copy-streams ${v('pg-copy-streams')}, pg-cursor ${v('pg-cursor')}, Node ${process.versions.node}` }) + '\n')
  process.stdout.write(JSON.stringify({ done: true }) + '\n')
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`compat.js: ${e.stack}\n`)
    process.exit(1)
  },
)
