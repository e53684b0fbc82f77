// Starts GraphiQL against this gateway. A token may be handed over in the URL fragment
// (#token=...), which browsers never send to the server; it fills the Authorization header.
(function () {
  var token = null;
  var match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    token = decodeURIComponent(match[1]);
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  var headers = token ? JSON.stringify({ Authorization: "Bearer " + token }, null, 2) : undefined;
  var fetcher = GraphiQL.createFetcher({ url: window.location.origin + "/graphql" });
  var defaultQuery = [
    "# Stock of two SKUs in every warehouse. Press the play button.",
    "query Stock {",
    "  stock(specNos: [\"G00001-01\", \"G00001-02\"]) {",
    "    specNo specName warehouseNo warehouseName onHand available locked modifiedAt",
    "  }",
    "}",
    ""
  ].join("\n");
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultQuery: defaultQuery,
    headers: headers,
    shouldPersistHeaders: false,
    defaultEditorToolsVisibility: headers ? "headers" : true
  }));
})();
