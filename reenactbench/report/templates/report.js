(function () {
  "use strict";
  // Sort a table with class "sortable" by the clicked column: numbers numerically (empty
  // and non-numeric cells last), other text alphabetically; a second click reverses.
  function cellValue(row, index) {
    var cell = row.children[index];
    return cell ? cell.textContent.trim() : "";
  }
  function compare(a, b) {
    var x = parseFloat(a), y = parseFloat(b);
    var xn = !isNaN(x) && isFinite(a.replace(/[^0-9eE+\-.]/g, "") || "x");
    var yn = !isNaN(y) && isFinite(b.replace(/[^0-9eE+\-.]/g, "") || "x");
    if (xn && yn) return x - y;
    if (xn !== yn) return xn ? -1 : 1;
    return a.localeCompare(b);
  }
  function sortBy(table, header, index) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var c = compare(cellValue(r1, index), cellValue(r2, index));
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    var headers = table.tHead.rows[table.tHead.rows.length - 1].cells;
    Array.prototype.forEach.call(headers, function (header, index) {
      header.addEventListener("click", function () { sortBy(table, header, index); });
    });
  });
})();
