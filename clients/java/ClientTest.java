// pgjdbc against a running dpgate: DatabaseMetaData browsing (as DBeaver
// and other JDBC tools do), a private aggregate through a
// PreparedStatement with a parameter, the notice as an SQLWarning, and
// the accuracy columns.
// Usage: java -cp postgresql.jar ClientTest.java <port> <password>
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
            System.out.println("pgjdbc ok: " + wards);
        }
    }
}
