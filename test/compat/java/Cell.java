// The Java cells of the compatibility matrix (test/compat/README.md): the
// PostgreSQL JDBC driver (Debian's 42.5.x) and HikariCP (2.7.9), run with
// the JDK's single-file source launcher:
//
//   java -cp postgresql.jar:HikariCP.jar:slf4j-api.jar:slf4j-nop.jar Cell.java jdbc|jdbc-simple
//
// The environment says where to connect (COMPAT_HOST, COMPAT_PORT, ...);
// stdout gets one JSON line per check and {"done": true} last; stderr the
// chatter. All checks of one target run in this one JVM.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.security.MessageDigest;
import java.sql.Array;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;
import org.postgresql.util.PGobject;

public class Cell {
    // A check's own failure: what was expected and what came.
    static final class Fail extends Exception {
        Fail(String msg) {
            super(msg);
        }
    }

    // A check the driver cannot do at all.
    static final class Skip extends Exception {
        Skip(String msg) {
            super(msg);
        }
    }

    interface Check {
        void run() throws Exception;
    }

    static String host = env("COMPAT_HOST");
    static String port = env("COMPAT_PORT");
    static String user = env("COMPAT_USER");
    static String password = env("COMPAT_PASSWORD");
    static String db = env("COMPAT_DB");
    static String prefix = env("COMPAT_PREFIX");
    static Set<String> skip = new HashSet<>();
    static String mode; // jdbc | jdbc-simple

    static String env(String k) {
        String v = System.getenv(k);
        if (v == null || v.isEmpty()) {
            if (k.equals("COMPAT_SKIP")) {
                return "";
            }
            throw new IllegalStateException(k + " is not set");
        }
        return v;
    }

    static String url() {
        return "jdbc:postgresql://" + host + ":" + port + "/" + db;
    }

    // conn opens a connection with the cell's properties and then extra
    // ones ("key", "value", ...).
    static Connection conn(String... extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("sslmode", "disable");
        p.setProperty("ApplicationName", "compat-" + mode);
        p.setProperty("connectTimeout", "10");
        p.setProperty("socketTimeout", "90");
        if (mode.equals("jdbc-simple")) {
            p.setProperty("preferQueryMode", "simple");
        }
        for (int i = 0; i + 1 < extra.length; i += 2) {
            p.setProperty(extra[i], extra[i + 1]);
        }
        return DriverManager.getConnection(url(), p);
    }

    static String t(String name) {
        return prefix + name;
    }

    // ---- assertions ----

    static void eq(String what, Object want, Object got) throws Fail {
        if (!Objects.equals(want, got)) {
            throw new Fail(what + ": expected " + show(want) + ", got " + show(got));
        }
    }

    static String show(Object o) {
        if (o == null) {
            return "null";
        }
        if (o instanceof byte[]) {
            byte[] b = (byte[]) o;
            return "bytea(" + b.length + " bytes, md5 " + md5(b) + ")";
        }
        if (o instanceof Object[]) {
            return Arrays.deepToString((Object[]) o);
        }
        if (o instanceof String) {
            return "\"" + o + "\"";
        }
        return o.toString() + " (" + o.getClass().getSimpleName() + ")";
    }

    static String md5(byte[] b) {
        try {
            MessageDigest d = MessageDigest.getInstance("MD5");
            return String.format("%032x", new BigInteger(1, d.digest(b)));
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    static void wantState(String what, SQLException e, String state) throws Fail {
        if (e == null) {
            throw new Fail(what + ": expected SQLSTATE " + state + ", got no error");
        }
        if (!state.equals(e.getSQLState())) {
            throw new Fail(what + ": expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e.getMessage());
        }
    }

    static long one(Connection c, String sql, Object... args) throws SQLException, Fail {
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            for (int i = 0; i < args.length; i++) {
                ps.setObject(i + 1, args[i]);
            }
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new Fail(sql + ": expected a row, got none");
                }
                long v = rs.getLong(1);
                if (rs.wasNull()) {
                    throw new Fail(sql + ": expected a number, got NULL");
                }
                return v;
            }
        }
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }

    // ---- reporting ----

    static synchronized void report(String check, boolean ok, String skipWhy, String detail, double ms) {
        StringBuilder b = new StringBuilder("{\"check\": ").append(json(check)).append(", \"ok\": ").append(ok);
        if (skipWhy != null) {
            b.append(", \"skip\": ").append(json(skipWhy));
        }
        if (detail != null) {
            b.append(", \"detail\": ").append(json(detail));
        }
        b.append(", \"ms\": ").append(String.format("%.1f", ms)).append("}");
        System.out.println(b);
        System.out.flush();
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '"':
                    b.append("\\\"");
                    break;
                case '\\':
                    b.append("\\\\");
                    break;
                case '\n':
                    b.append("\\n");
                    break;
                case '\r':
                    b.append("\\r");
                    break;
                case '\t':
                    b.append("\\t");
                    break;
                default:
                    if (ch < 0x20) {
                        b.append(String.format("\\u%04x", (int) ch));
                    } else {
                        b.append(ch);
                    }
            }
        }
        return b.append('"').toString();
    }

    static String describe(Throwable e) {
        if (e instanceof SQLException) {
            SQLException s = (SQLException) e;
            String msg = "SQLSTATE " + s.getSQLState() + ": " + s.getMessage();
            if (s.getNextException() != null && s.getNextException() != s) {
                msg += " (next: SQLSTATE " + s.getNextException().getSQLState() + ": " + s.getNextException().getMessage() + ")";
            }
            return msg;
        }
        if (e instanceof Fail) {
            return e.getMessage();
        }
        return e.toString();
    }

    static final ExecutorService runner = Executors.newCachedThreadPool(r -> {
        Thread th = new Thread(r);
        th.setDaemon(true);
        return th;
    });

    // run runs one check with a time limit (a check stuck on the wire fails
    // and the others still run).
    static void run(String name, Check c) {
        if (skip.contains(name)) {
            return;
        }
        long began = System.nanoTime();
        Future<?> f = runner.submit(() -> {
            c.run();
            return null;
        });
        String detail = null;
        String skipWhy = null;
        try {
            f.get(100, TimeUnit.SECONDS);
        } catch (TimeoutException e) {
            f.cancel(true);
            detail = "no answer within 100 s";
        } catch (java.util.concurrent.ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof Skip) {
                skipWhy = cause.getMessage();
            } else {
                detail = describe(cause);
                System.err.println(name + ":");
                cause.printStackTrace();
            }
        } catch (InterruptedException e) {
            detail = "interrupted";
        }
        report(name, detail == null, skipWhy, detail, (System.nanoTime() - began) / 1e6);
    }

    // ---- setup ----

    static void setup() throws SQLException {
        try (Connection c = conn()) {
            String[] ddl = {
                "types (id int PRIMARY KEY, i int, b bigint, n numeric, t text, by bytea, ts timestamptz, j json, jb jsonb, u uuid, ia int[], ta text[], nl text)",
                "kv (id int PRIMARY KEY, v int NOT NULL)",
                "ryw (id int PRIMARY KEY, v int NOT NULL)",
                "err (id int PRIMARY KEY)",
                "big (id int PRIMARY KEY, data bytea NOT NULL)",
                "conc (worker int, n int, v text NOT NULL, PRIMARY KEY (worker, n))",
                "prep (worker int, n int, v text NOT NULL, PRIMARY KEY (worker, n))",
                "batch (run int, id int, v text NOT NULL, PRIMARY KEY (run, id))",
                "hikari (worker int, n int, v text NOT NULL, PRIMARY KEY (worker, n))",
            };
            for (String d : ddl) {
                String name = d.substring(0, d.indexOf(' '));
                exec(c, "DROP TABLE IF EXISTS " + t(name));
                exec(c, "CREATE TABLE " + t(name) + " " + d.substring(d.indexOf(' ') + 1));
            }
        }
    }

    // ---- types ----

    static final int I = -2147483648;
    static final long B = 9007199254740993L; // not a double
    static final BigDecimal N = new BigDecimal("-12345678901234567890.0123456789");
    static final String T = "héllo, wörld ✓ — 'single' \"double\" \\backslash\ttab\nnewline $1 ?";
    static final byte[] BY = new byte[256];
    static final OffsetDateTime TS = OffsetDateTime.of(2024, 2, 29, 13, 45, 30, 123456000, ZoneOffset.ofHours(5));
    static final String J = "{\"b\": [1, 2.50, \"x\"],  \"a\": {\"nested\": true}}"; // json keeps its text
    static final String JB = "{\"a\": {\"nested\": true}, \"b\": [1, 2.50, \"x\"]}"; // jsonb's own form
    static final UUID U = UUID.fromString("8f14e45f-ceea-467f-a0e6-6a4a2c1d3b0e");
    static final Integer[] IA = {1, -2, null, 2147483647};
    static final String[] TA = {"plain", "with,comma", "with \"quote\"", "with space", null, "", "NULL", "{brace}"};

    static {
        for (int i = 0; i < 256; i++) {
            BY[i] = (byte) i;
        }
    }

    // setBytea binds a bytea parameter: setBytes, except in simple query
    // mode, where pgjdbc 42.5.x cannot inline a byte[] (it sends the "?"
    // unchanged: pgjdbc issue 3169, fixed in 42.7.4); there the value goes
    // as its hex text, which the column or a ::bytea cast turns into bytea.
    static void setBytea(PreparedStatement ps, int at, byte[] b) throws SQLException {
        if (!mode.equals("jdbc-simple")) {
            ps.setBytes(at, b);
            return;
        }
        StringBuilder hex = new StringBuilder(2 + 2 * b.length).append("\\x");
        final String digits = "0123456789abcdef";
        for (byte x : b) {
            hex.append(digits.charAt((x >> 4) & 0xf)).append(digits.charAt(x & 0xf));
        }
        ps.setString(at, hex.toString());
    }

    // bind sets the twelve values from position at.
    static void bind(Connection c, PreparedStatement ps, int at) throws SQLException {
        ps.setInt(at++, I);
        ps.setLong(at++, B);
        ps.setBigDecimal(at++, N);
        ps.setString(at++, T);
        setBytea(ps, at++, BY);
        ps.setObject(at++, TS);
        ps.setObject(at++, J, Types.OTHER);
        PGobject jb = new PGobject();
        jb.setType("jsonb");
        jb.setValue(JB);
        ps.setObject(at++, jb);
        ps.setObject(at++, U);
        ps.setArray(at++, c.createArrayOf("int4", IA));
        ps.setArray(at++, c.createArrayOf("text", TA));
        ps.setNull(at++, Types.VARCHAR);
    }

    // verify compares the twelve columns from position at.
    static void verify(String how, ResultSet rs, int at) throws Exception {
        eq(how + " int", I, rs.getInt(at++));
        eq(how + " bigint", B, rs.getLong(at++));
        eq(how + " numeric", N, rs.getBigDecimal(at++));
        eq(how + " text", T, rs.getString(at++));
        byte[] by = rs.getBytes(at++);
        if (!Arrays.equals(BY, by)) {
            throw new Fail(how + " bytea: expected " + show(BY) + ", got " + show(by));
        }
        OffsetDateTime ts = rs.getObject(at++, OffsetDateTime.class);
        if (ts == null || !ts.isEqual(TS)) {
            throw new Fail(how + " timestamptz: expected " + TS + ", got " + ts);
        }
        eq(how + " json", J, rs.getString(at++));
        eq(how + " jsonb", JB, rs.getString(at++));
        eq(how + " uuid", U, rs.getObject(at++, UUID.class));
        Array ia = rs.getArray(at++);
        eq(how + " int[]", Arrays.asList(IA), ia == null ? null : Arrays.asList((Object[]) ia.getArray()));
        Array ta = rs.getArray(at++);
        eq(how + " text[]", Arrays.asList(TA), ta == null ? null : Arrays.asList((Object[]) ta.getArray()));
        String nl = rs.getString(at);
        if (nl != null || !rs.wasNull()) {
            throw new Fail(how + " NULL: expected NULL, got " + show(nl));
        }
    }

    static final String SELECT12 = "SELECT ?::int, ?::bigint, ?::numeric, ?::text, ?::bytea, ?::timestamptz, ?::json, ?::jsonb, ?::uuid, ?::int[], ?::text[], ?::text";

    static String lit(String s) {
        return "'" + s.replace("'", "''") + "'";
    }

    // The same twelve values as SQL literals, for a Statement (no parameters).
    static String literalSelect() {
        StringBuilder hex = new StringBuilder("\\x");
        for (byte b : BY) {
            hex.append(String.format("%02x", b & 0xff));
        }
        return "SELECT (" + I + ")::int, " + B + "::bigint, " + N.toPlainString() + "::numeric, " + lit(T) + "::text, "
            + lit(hex.toString()) + "::bytea, " + lit("2024-02-29 13:45:30.123456+05") + "::timestamptz, "
            + lit(J) + "::json, " + lit(JB) + "::jsonb, " + lit(U.toString()) + "::uuid, "
            + "ARRAY[1, -2, NULL, 2147483647]::int[], "
            + "ARRAY['plain', 'with,comma', 'with \"quote\"', 'with space', NULL, '', 'NULL', '{brace}']::text[], NULL::text";
    }

    static void checkTypes() throws Exception {
        try (Connection c = conn()) {
            // Unprepared: a Statement with literals, and a PreparedStatement
            // that never becomes a named server-side statement.
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(literalSelect())) {
                rs.next();
                verify("literal Statement", rs, 1);
            }
            try (PreparedStatement ps = c.prepareStatement(SELECT12)) {
                ps.unwrap(PGStatement.class).setPrepareThreshold(0);
                for (int round = 0; round < 2; round++) {
                    bind(c, ps, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        verify("unnamed PreparedStatement, round " + round, rs, 1);
                    }
                }
            }
            // Prepared: a named server-side statement from the first
            // execution (binary results once the driver has described it).
            try (PreparedStatement ps = c.prepareStatement(SELECT12)) {
                ps.unwrap(PGStatement.class).setPrepareThreshold(1);
                for (int round = 0; round < 3; round++) {
                    bind(c, ps, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        verify("named PreparedStatement, round " + round, rs, 1);
                    }
                }
            }
            // A row written and read back.
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("types") + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                ps.setInt(1, 1);
                bind(c, ps, 2);
                eq("INSERT's update count", 1, ps.executeUpdate());
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT i, b, n, t, by, ts, j, jb, u, ia, ta, nl FROM " + t("types") + " WHERE id = ?")) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    if (!rs.next()) {
                        throw new Fail("the row written: expected it, got no row");
                    }
                    verify("the row written", rs, 1);
                }
            }
            // And PostgreSQL agrees on the values it was sent.
            try (PreparedStatement ps = c.prepareStatement("SELECT ts = '2024-02-29 13:45:30.123456+05'::timestamptz AND n = "
                    + N.toPlainString() + " AND md5(by) = ? AND u = '" + U + "' AND ia = ARRAY[1, -2, NULL, 2147483647] AND jb = ?::jsonb FROM " + t("types") + " WHERE id = 1")) {
                ps.setString(1, md5(BY));
                ps.setString(2, JB);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    eq("the row's values compared in SQL", true, rs.getBoolean(1));
                }
            }
        }
    }

    // ---- transactions, read-your-writes ----

    static void checkTxOwnWrite() throws Exception {
        try (Connection c = conn()) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("kv") + " VALUES (?, ?)")) {
                ps.setInt(1, 1);
                ps.setInt(2, 4242);
                ps.executeUpdate();
            }
            eq("inside the transaction, the row's value", 4242L, one(c, "SELECT v FROM " + t("kv") + " WHERE id = ?", 1));
            eq("inside the transaction, txid unchanged across statements", one(c, "SELECT txid_current()"), one(c, "SELECT txid_current()"));
            c.commit();
            c.setAutoCommit(true);
            eq("after COMMIT, the row's value", 4242L, one(c, "SELECT v FROM " + t("kv") + " WHERE id = ?", 1));
        }
        try (Connection c = conn()) {
            eq("after COMMIT, on a new connection, the row's value", 4242L, one(c, "SELECT v FROM " + t("kv") + " WHERE id = ?", 1));
        }
    }

    static void checkRywSameConn() throws Exception {
        try (Connection c = conn();
             PreparedStatement ins = c.prepareStatement("INSERT INTO " + t("ryw") + " VALUES (?, ?)");
             PreparedStatement upd = c.prepareStatement("UPDATE " + t("ryw") + " SET v = v + 1000 WHERE id = ?");
             PreparedStatement sel = c.prepareStatement("SELECT v FROM " + t("ryw") + " WHERE id = ?")) {
            for (int i = 1; i <= 20; i++) {
                ins.setInt(1, i);
                ins.setInt(2, i);
                eq("round " + i + " INSERT count", 1, ins.executeUpdate());
                sel.setInt(1, i);
                eq("round " + i + " read after INSERT", List.of(i), ints(sel));
                upd.setInt(1, i);
                eq("round " + i + " UPDATE count", 1, upd.executeUpdate());
                eq("round " + i + " read after UPDATE", List.of(i + 1000), ints(sel));
            }
        }
    }

    static List<Integer> ints(PreparedStatement ps) throws SQLException {
        List<Integer> out = new ArrayList<>();
        try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) {
                out.add(rs.getInt(1));
            }
        }
        return out;
    }

    static void checkRywOtherConn() throws Exception {
        try (Connection w = conn();
             Connection r = conn();
             PreparedStatement ins = w.prepareStatement("INSERT INTO " + t("ryw") + " VALUES (?, ?)");
             PreparedStatement upd = w.prepareStatement("UPDATE " + t("ryw") + " SET v = v + 1000 WHERE id = ?");
             PreparedStatement sel = r.prepareStatement("SELECT v FROM " + t("ryw") + " WHERE id = ?")) {
            for (int i = 101; i <= 120; i++) {
                ins.setInt(1, i);
                ins.setInt(2, i);
                eq("round " + i + " INSERT count", 1, ins.executeUpdate());
                sel.setInt(1, i);
                eq("round " + i + " read on the other connection after INSERT", List.of(i), ints(sel));
                upd.setInt(1, i);
                eq("round " + i + " UPDATE count", 1, upd.executeUpdate());
                eq("round " + i + " read on the other connection after UPDATE", List.of(i + 1000), ints(sel));
            }
        }
    }

    static void checkErrorRollback() throws Exception {
        try (Connection c = conn()) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("err") + " VALUES (?)")) {
                ps.setInt(1, 1);
                ps.executeUpdate();
                ps.setInt(1, 2);
                ps.executeUpdate();
                SQLException got = null;
                try {
                    ps.setInt(1, 1);
                    ps.executeUpdate();
                } catch (SQLException e) {
                    got = e;
                }
                wantState("the duplicate INSERT", got, "23505");
                // The transaction is aborted: a statement before ROLLBACK fails with 25P02.
                got = null;
                try {
                    one(c, "SELECT 1");
                } catch (SQLException e) {
                    got = e;
                }
                wantState("a SELECT in the aborted transaction", got, "25P02");
            }
            c.rollback();
            c.setAutoCommit(true);
            eq("rows after ROLLBACK", 0L, one(c, "SELECT count(*) FROM " + t("err")));
            eq("SELECT 41 + 1 after ROLLBACK", 42L, one(c, "SELECT 41 + 1"));
        }
    }

    // ---- cancel ----

    static void checkCancel() throws Exception {
        try (Connection c = conn(); Statement st = c.createStatement()) {
            Future<SQLException> sleeping = runner.submit(() -> {
                try {
                    st.executeQuery("SELECT pg_sleep(30)").close();
                    return null;
                } catch (SQLException e) {
                    return e;
                }
            });
            Thread.sleep(500);
            long began = System.nanoTime();
            st.cancel();
            SQLException got;
            try {
                got = sleeping.get(10, TimeUnit.SECONDS);
            } catch (TimeoutException e) {
                throw new Fail("pg_sleep(30) after Statement.cancel(): expected SQLSTATE 57014 within 10 s, still running");
            }
            if (got == null) {
                throw new Fail("pg_sleep(30) after Statement.cancel(): expected SQLSTATE 57014, it completed");
            }
            wantState("pg_sleep(30) after Statement.cancel()", got, "57014");
            double took = (System.nanoTime() - began) / 1e9;
            if (took > 10) {
                throw new Fail("the cancel took " + took + " s, expected under 10 s");
            }
            eq("the next statement on the connection", 42L, one(c, "SELECT 42"));
        }
    }

    // ---- size ----

    static void checkLargeResult() throws Exception {
        try (Connection c = conn(); Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT g, 'row ' || g FROM generate_series(1, 100000) g")) {
            long n = 0, sum = 0;
            while (rs.next()) {
                n++;
                long g = rs.getLong(1);
                sum += g;
                if (n == g && !rs.getString(2).equals("row " + g)) {
                    throw new Fail("row " + g + ": expected \"row " + g + "\", got " + show(rs.getString(2)));
                }
            }
            eq("rows", 100000L, n);
            eq("sum", 5000050000L, sum);
        }
    }

    static void checkLargeValue() throws Exception {
        byte[] data = new byte[10 << 20];
        new Random(12).nextBytes(data);
        try (Connection c = conn()) {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("big") + " VALUES (1, ?)")) {
                setBytea(ps, 1, data);
                eq("INSERT count", 1, ps.executeUpdate());
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT data, md5(data), length(data) FROM " + t("big") + " WHERE id = 1");
                 ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) {
                    throw new Fail("the 10 MB row: expected it, got no row");
                }
                byte[] got = rs.getBytes(1);
                eq("server-side md5", md5(data), rs.getString(2));
                eq("server-side length", (long) data.length, rs.getLong(3));
                if (!Arrays.equals(data, got)) {
                    throw new Fail("the 10 MB bytea read back: expected " + show(data) + ", got " + show(got));
                }
            }
        }
    }

    // ---- LISTEN/NOTIFY ----

    static void checkListenNotify() throws Exception {
        String channel = prefix + "chan";
        String payload = "hello from " + mode + " ✓ " + System.nanoTime();
        try (Connection l = conn(); Connection n = conn()) {
            exec(l, "LISTEN " + channel);
            try (PreparedStatement ps = n.prepareStatement("SELECT pg_notify(?, ?)")) {
                ps.setString(1, channel);
                ps.setString(2, payload);
                ps.executeQuery().close();
            }
            PGConnection pg = l.unwrap(PGConnection.class);
            long deadline = System.currentTimeMillis() + 10000;
            List<String> seen = new ArrayList<>();
            while (System.currentTimeMillis() < deadline) {
                int wait = (int) Math.max(1, deadline - System.currentTimeMillis());
                PGNotification[] got = pg.getNotifications(wait);
                if (got == null) {
                    continue;
                }
                for (PGNotification g : got) {
                    if (g.getName().equals(channel) && g.getParameter().equals(payload)) {
                        exec(l, "UNLISTEN *");
                        return;
                    }
                    seen.add(g.getName() + ": " + g.getParameter());
                }
            }
            throw new Fail("expected the notification \"" + payload + "\" on " + channel + " within 10 s, got " + seen);
        }
    }

    // ---- concurrency ----

    static void parallel(int n, ThrowingInt body) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(n);
        CountDownLatch start = new CountDownLatch(1);
        List<Future<?>> fs = new ArrayList<>();
        for (int w = 0; w < n; w++) {
            final int worker = w;
            fs.add(pool.submit((Callable<Void>) () -> {
                start.await();
                body.run(worker);
                return null;
            }));
        }
        start.countDown();
        List<String> errors = new ArrayList<>();
        for (int w = 0; w < n; w++) {
            try {
                fs.get(w).get(90, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException e) {
                errors.add("worker " + w + ": " + describe(e.getCause()));
            } catch (TimeoutException e) {
                errors.add("worker " + w + ": no answer within 90 s");
            }
        }
        pool.shutdownNow();
        if (!errors.isEmpty()) {
            throw new Fail(errors.size() + " of " + n + " workers failed; first: " + errors.get(0));
        }
    }

    interface ThrowingInt {
        void run(int i) throws Exception;
    }

    static void checkConcurrency() throws Exception {
        parallel(50, worker -> {
            try (Connection c = conn();
                 PreparedStatement ins = c.prepareStatement("INSERT INTO " + t("conc") + " VALUES (?, ?, ?)");
                 PreparedStatement sel = c.prepareStatement("SELECT v FROM " + t("conc") + " WHERE worker = ? AND n = ?")) {
                c.setAutoCommit(false);
                for (int i = 0; i < 20; i++) {
                    String v = "w" + worker + "-" + i;
                    ins.setInt(1, worker);
                    ins.setInt(2, i);
                    ins.setString(3, v);
                    eq("INSERT count", 1, ins.executeUpdate());
                    sel.setInt(1, worker);
                    sel.setInt(2, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        eq("transaction " + i + " reads its row", v, rs.next() ? rs.getString(1) : null);
                    }
                    c.commit();
                }
            }
        });
        try (Connection c = conn()) {
            eq("rows after 50 x 20 transactions", 1000L, one(c, "SELECT count(*) FROM " + t("conc")));
            eq("sum of n", 50L * 190, one(c, "SELECT sum(n) FROM " + t("conc")));
            eq("distinct workers", 50L, one(c, "SELECT count(DISTINCT worker) FROM " + t("conc")));
        }
    }

    // ---- JDBC's own: prepareThreshold ----

    // Eight connections at once, each with a SELECT and an INSERT statement
    // run 15 times with varying parameters, so that the driver turns them
    // into named server-side statements (at the 5th use by default, the 1st
    // with prepareThreshold=1) while pgsplit moves the connections' work
    // across its server connections.
    static void checkPrepareThreshold() throws Exception {
        for (int threshold : new int[] {5, 1}) {
            final int th = threshold;
            final int base = threshold * 100;
            parallel(8, worker -> {
                try (Connection c = th == 5 ? conn() : conn("prepareThreshold", "1");
                     PreparedStatement sel = c.prepareStatement("SELECT ?::int * 2, ?::text || '!', ?::bigint + 1");
                     PreparedStatement ins = c.prepareStatement("INSERT INTO " + t("prep") + " VALUES (?, ?, ?)");
                     PreparedStatement cnt = c.prepareStatement("SELECT count(*), coalesce(sum(n), 0) FROM " + t("prep") + " WHERE worker = ?")) {
                    for (int i = 0; i < 15; i++) {
                        int k = worker * 1000 + i;
                        sel.setInt(1, k);
                        sel.setString(2, "p" + k);
                        sel.setLong(3, (long) k << 32);
                        try (ResultSet rs = sel.executeQuery()) {
                            rs.next();
                            eq("threshold " + th + " use " + i + " int", k * 2, rs.getInt(1));
                            eq("threshold " + th + " use " + i + " text", "p" + k + "!", rs.getString(2));
                            eq("threshold " + th + " use " + i + " bigint", ((long) k << 32) + 1, rs.getLong(3));
                        }
                        ins.setInt(1, base + worker);
                        ins.setInt(2, i);
                        ins.setString(3, "v" + i);
                        eq("threshold " + th + " INSERT " + i + " count", 1, ins.executeUpdate());
                        cnt.setInt(1, base + worker);
                        try (ResultSet rs = cnt.executeQuery()) {
                            rs.next();
                            eq("threshold " + th + " after INSERT " + i + " count", (long) i + 1, rs.getLong(1));
                            eq("threshold " + th + " after INSERT " + i + " sum", (long) i * (i + 1) / 2, rs.getLong(2));
                        }
                        if (i == 10) {
                            // A transaction in between: the named statements
                            // are used inside it as well.
                            c.setAutoCommit(false);
                        }
                        if (i == 13) {
                            c.commit();
                            c.setAutoCommit(true);
                        }
                    }
                    for (PreparedStatement ps : new PreparedStatement[] {sel, ins, cnt}) {
                        eq("threshold " + th + ": the driver uses a named server-side statement", true,
                            ps.unwrap(PGStatement.class).isUseServerPrepare());
                    }
                    // Closed and prepared again: the driver's statement cache
                    // hands back the server-side statement it named before.
                    sel.close();
                    try (PreparedStatement again = c.prepareStatement("SELECT ?::int * 2, ?::text || '!', ?::bigint + 1")) {
                        for (int i = 0; i < 6; i++) {
                            int k = -(worker * 1000 + i);
                            again.setInt(1, k);
                            again.setString(2, "again" + k);
                            again.setLong(3, k);
                            try (ResultSet rs = again.executeQuery()) {
                                rs.next();
                                eq("threshold " + th + " prepared again, use " + i, List.of(k * 2, "again" + k + "!", (long) k + 1),
                                    List.of(rs.getInt(1), rs.getString(2), rs.getLong(3)));
                            }
                        }
                    }
                }
            });
        }
        try (Connection c = conn()) {
            eq("rows the named INSERTs wrote", 2L * 8 * 15, one(c, "SELECT count(*) FROM " + t("prep")));
        }
    }

    // ---- JDBC's own: batches ----

    static void checkBatchInsert() throws Exception {
        int run = 0;
        for (String rewrite : new String[] {"false", "true"}) {
            for (boolean autocommit : new boolean[] {true, false}) {
                run++;
                String how = "reWriteBatchedInserts=" + rewrite + (autocommit ? ", autocommit" : ", in a transaction");
                try (Connection c = conn("reWriteBatchedInserts", rewrite);
                     PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("batch") + " (run, id, v) VALUES (?, ?, ?)")) {
                    c.setAutoCommit(autocommit);
                    for (int i = 1; i <= 1000; i++) {
                        ps.setInt(1, run);
                        ps.setInt(2, i);
                        ps.setString(3, "row " + i);
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    eq(how + ": executeBatch's counts", 1000, counts.length);
                    for (int i = 0; i < counts.length; i++) {
                        boolean ok = counts[i] == 1 || (rewrite.equals("true") && counts[i] == Statement.SUCCESS_NO_INFO);
                        if (!ok) {
                            throw new Fail(how + ": count " + i + ": expected 1" + (rewrite.equals("true") ? " or SUCCESS_NO_INFO" : "") + ", got " + counts[i]);
                        }
                    }
                    if (!autocommit) {
                        c.commit();
                        c.setAutoCommit(true);
                    }
                    eq(how + ": rows", 1000L, one(c, "SELECT count(*) FROM " + t("batch") + " WHERE run = ?", run));
                    eq(how + ": sum of ids", 500500L, one(c, "SELECT sum(id) FROM " + t("batch") + " WHERE run = ? AND v = 'row ' || id", run));
                }
            }
        }
        // A batch with a duplicate in the middle fails as a whole in a
        // transaction, with 23505, and leaves nothing behind.
        try (Connection c = conn(); PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("batch") + " (run, id, v) VALUES (?, ?, ?)")) {
            c.setAutoCommit(false);
            for (int i = 1; i <= 100; i++) {
                ps.setInt(1, 99);
                ps.setInt(2, i == 50 ? 1 : i);
                ps.setString(3, "dup");
                ps.addBatch();
            }
            SQLException got = null;
            try {
                ps.executeBatch();
            } catch (BatchUpdateException e) {
                got = e.getNextException() != null ? e.getNextException() : e;
            }
            wantState("a batch with a duplicate key", got, "23505");
            c.rollback();
            c.setAutoCommit(true);
            eq("rows of the failed batch", 0L, one(c, "SELECT count(*) FROM " + t("batch") + " WHERE run = 99"));
        }
    }

    // ---- JDBC's own: fetch size (portal-based cursor) ----

    static void checkFetchSize() throws Exception {
        try (Connection c = conn()) {
            c.setAutoCommit(false);
            long fetches = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT g, md5(g::text) FROM generate_series(1, 100000) g")) {
                ps.setFetchSize(1000);
                try (ResultSet rs = ps.executeQuery()) {
                    long n = 0, sum = 0;
                    while (rs.next()) {
                        n++;
                        long g = rs.getLong(1);
                        sum += g;
                        if (g != n) {
                            throw new Fail("row " + n + ": expected g = " + n + ", got " + g);
                        }
                        if (n % 1000 == 1) {
                            fetches++;
                        }
                        if (n == 50000) {
                            // Another statement on the connection while the
                            // portal is open: the same transaction, the same
                            // server connection.
                            eq("a statement between fetches", 7L, one(c, "SELECT 3 + 4"));
                            // The driver reads through a named portal, open
                            // on the server connection this statement runs on.
                            eq("named portals of the query in pg_cursors, halfway", 1L,
                                one(c, "SELECT count(*) FROM pg_cursors WHERE name <> '' AND statement LIKE '%generate_series(1, 100000) g'"));
                            if (!md5(Long.toString(g).getBytes()).equals(rs.getString(2))) {
                                throw new Fail("row 50000's md5: expected " + md5("50000".getBytes()) + ", got " + rs.getString(2));
                            }
                        }
                    }
                    eq("rows through the cursor", 100000L, n);
                    eq("sum through the cursor", 5000050000L, sum);
                    eq("the ResultSet's fetch size", 1000, rs.getFetchSize());
                }
            }
            c.commit();
            c.setAutoCommit(true);
            eq("the connection after the cursor's transaction", 1L, one(c, "SELECT 1"));
        }
    }

    // ---- HikariCP ----

    static void checkHikari() throws Exception {
        HikariConfig hc = new HikariConfig();
        hc.setJdbcUrl(url());
        hc.setUsername(user);
        hc.setPassword(password);
        hc.addDataSourceProperty("sslmode", "disable");
        hc.addDataSourceProperty("ApplicationName", "compat-hikari");
        if (mode.equals("jdbc-simple")) {
            hc.addDataSourceProperty("preferQueryMode", "simple");
        }
        hc.setMaximumPoolSize(20);
        hc.setMinimumIdle(20);
        hc.setConnectionTimeout(30000);
        hc.setPoolName("compat-" + prefix);
        final int workers = 50, rounds = 40;
        AtomicInteger borrows = new AtomicInteger();
        Map<Object, Integer> physical = new ConcurrentHashMap<>();
        try (HikariDataSource ds = new HikariDataSource(hc)) {
            parallel(workers, worker -> {
                for (int i = 0; i < rounds; i++) {
                    try (Connection c = ds.getConnection()) {
                        borrows.incrementAndGet();
                        PGConnection pg = c.unwrap(PGConnection.class);
                        physical.merge(System.identityHashCode(pg), 1, Integer::sum);
                        if (i % 2 == 0) {
                            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + t("hikari") + " VALUES (?, ?, ?)")) {
                                ps.setInt(1, worker);
                                ps.setInt(2, i);
                                ps.setString(3, "h" + worker + "-" + i);
                                eq("INSERT count", 1, ps.executeUpdate());
                            }
                            try (PreparedStatement ps = c.prepareStatement("SELECT v FROM " + t("hikari") + " WHERE worker = ? AND n = ?")) {
                                ps.setInt(1, worker);
                                ps.setInt(2, i);
                                try (ResultSet rs = ps.executeQuery()) {
                                    eq("worker " + worker + " round " + i + " reads its row", "h" + worker + "-" + i, rs.next() ? rs.getString(1) : null);
                                }
                            }
                        } else {
                            c.setAutoCommit(false);
                            long got = one(c, "SELECT count(*) FROM " + t("hikari") + " WHERE worker = ?", worker);
                            c.commit();
                            c.setAutoCommit(true);
                            eq("worker " + worker + " round " + i + " its rows so far", (long) (i + 1) / 2, got);
                        }
                    }
                }
            });
            int total = ds.getHikariPoolMXBean().getTotalConnections();
            if (total > 20) {
                throw new Fail("the pool's connections: expected at most 20, got " + total);
            }
        }
        eq("borrows", workers * rounds, borrows.get());
        if (physical.size() > 20) {
            throw new Fail("physical connections used: expected at most 20, got " + physical.size());
        }
        int reusedMost = physical.values().stream().mapToInt(Integer::intValue).max().orElse(0);
        if (reusedMost < 10) {
            throw new Fail("connection reuse: expected some connection borrowed 10+ times, the most was " + reusedMost);
        }
        try (Connection c = conn()) {
            eq("rows the pool wrote", (long) workers * rounds / 2, one(c, "SELECT count(*) FROM " + t("hikari")));
        }
    }

    public static void main(String[] args) throws Exception {
        mode = args.length > 0 ? args[0] : "jdbc";
        for (String s : env("COMPAT_SKIP").split(",")) {
            if (!s.isBlank()) {
                skip.add(s.trim());
            }
        }
        try {
            setup();
        } catch (SQLException e) {
            System.err.println("setup: " + describe(e));
            e.printStackTrace();
            System.exit(1);
        }
        run("types", Cell::checkTypes);
        run("tx_own_write", Cell::checkTxOwnWrite);
        run("ryw_same_conn", Cell::checkRywSameConn);
        run("ryw_other_conn", Cell::checkRywOtherConn);
        run("error_rollback", Cell::checkErrorRollback);
        run("cancel", Cell::checkCancel);
        run("large_result", Cell::checkLargeResult);
        run("large_value", Cell::checkLargeValue);
        run("listen_notify", Cell::checkListenNotify);
        run("concurrency", Cell::checkConcurrency);
        if (mode.equals("jdbc")) {
            run("prepare_threshold", Cell::checkPrepareThreshold);
            run("batch_insert", Cell::checkBatchInsert);
            run("fetch_size", Cell::checkFetchSize);
            run("hikari", Cell::checkHikari);
        }
        System.out.println("{\"version\": \"pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION
                + (mode.equals("jdbc") ? ", HikariCP 2.7.9" : "") + ", Java " + Runtime.version().feature() + "\"}");
        System.out.println("{\"done\": true}");
        System.out.flush();
        System.exit(0);
    }
}
