// pgjdbc against a running dpgate: DatabaseMetaData browsing (as DBeaver
// and other JDBC tools do), a private aggregate through a
// PreparedStatement with a parameter, the notice as an SQLWarning, the
// accuracy columns, and DBeaver's data tab (SELECT * FROM public.visits)
// answered with synthetic rows.
// Usage: java -cp postgresql.jar ClientTest.java <port> <password> <synthetic max_rows>
import java.sql.*;
import java.util.*;

public class ClientTest {
    static void check(boolean cond, String what) {
        if (!cond) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/warehouse";
        Properties props = new Properties();
        props.setProperty("user", "analyst");
        props.setProperty("password", args[1]);
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = conn.getMetaData();
            check(md.getDatabaseProductName().equals("PostgreSQL"), "product " + md.getDatabaseProductName());
            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            check(schemas.contains("public"), "schemas " + schemas);
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            check(tables.contains("visits") && tables.contains("patients"), "tables " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "visits", "%")) {
                while (rs.next()) columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            check(columns.contains("age:int8") && columns.stream().noneMatch(c -> c.startsWith("secret")),
                  "columns " + columns);
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "visits")) {
                check(!rs.next(), "no primary key");
            }
            String sql = "SELECT ward, COUNT(*) AS n, AVG(cost) AS mean_cost FROM visits WHERE age >= ? GROUP BY ward ORDER BY ward";
            List<String> wards = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement(sql)) {
                // Enough executions to pass pgjdbc's prepareThreshold (5):
                // the statement becomes a named server-side statement,
                // reused with binary transfer of results.
                for (int i = 0; i < 7; i++) {
                    ps.setLong(1, 18 + i);
                    wards.clear();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            wards.add(rs.getString("ward"));
                            rs.getLong("n");
                            rs.getDouble("mean_cost");
                        }
                    }
                    SQLWarning w = ps.getWarnings();
                    check(w != null && w.getMessage().contains("this answer cost"), "notice " + w);
                }
            }
            check(wards.equals(List.of("A", "B", "C")), "wards " + wards);
            try (Statement st = conn.createStatement()) {
                st.execute("SET dp.accuracy = 'columns'");
                try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM visits")) {
                    ResultSetMetaData rmd = rs.getMetaData();
                    check(rmd.getColumnCount() == 2 && rmd.getColumnName(2).equals("count_ci"), "accuracy columns");
                    check(rs.next() && rs.getDouble(2) > 0, "half-width");
                }
            }
            // DBeaver's data tab: the whole table, its first page of rows.
            int expected = Integer.parseInt(args[2]);
            try (Statement st = conn.createStatement()) {
                st.setMaxRows(200);
                // The fit starts with dpgate; until it is done: 55000, retry.
                for (int tries = 0; ; tries++) {
                    try (ResultSet rs = st.executeQuery("SELECT * FROM public.visits LIMIT 1")) {
                        break;
                    } catch (SQLException e) {
                        check("55000".equals(e.getSQLState()) && tries < 240, "synthetic rows: " + e);
                        Thread.sleep(500);
                    }
                }
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT * FROM public.visits")) {
                    ResultSetMetaData rmd = rs.getMetaData();
                    List<String> names = new ArrayList<>();
                    for (int i = 1; i <= rmd.getColumnCount(); i++) names.add(rmd.getColumnName(i));
                    check(names.contains("age") && names.contains("ward") && !names.contains("secret"), "synthetic columns " + names);
                    while (rs.next()) {
                        n++;
                        long age = rs.getLong("age");
                        check(age >= 0 && age <= 110, "synthetic age " + age);
                        check(List.of("A", "B", "C").contains(rs.getString("ward")), "synthetic ward");
                    }
                }
                check(n == expected, "synthetic rows " + n + ", expected " + expected);
                SQLWarning w = st.getWarnings();
                check(w != null && w.getMessage().contains("synthetic") && w.getMessage().contains("no row is a real person"),
                      "synthetic notice " + w);
            }
            // Row-level filters with a bound parameter, past the prepare threshold.
            try (PreparedStatement ps = conn.prepareStatement("SELECT age, ward FROM visits WHERE age > ? ORDER BY age DESC LIMIT 5")) {
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, 60 + i);
                    int n = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            n++;
                            check(rs.getInt(1) > 60 + i, "filtered age " + rs.getInt(1));
                        }
                    }
                    check(n == 5, "limited rows " + n);
                }
            }
            System.out.println("pgjdbc ok: " + wards);
        }
    }
}
