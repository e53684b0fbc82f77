// Starts GraphiQL against this gateway. A token may be handed over in the URL fragment
// (#token=...), which browsers never send to the server; it fills the Authorization header.
// Subscriptions go over a WebSocket with the same token.
// When the gateway does not answer introspection (graphql.introspection), the page says so and
// GraphiQL runs queries without asking for the schema (no documentation or completion).
(function () {
  var container = document.getElementById("graphiql");
  var introspection = container.getAttribute("data-introspection") !== "off";
  var token = null;
  var match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    token = decodeURIComponent(match[1]);
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  var headers = token ? JSON.stringify({ Authorization: "Bearer " + token }, null, 2) : undefined;
  // Subscriptions run over a WebSocket to the same /graphql (graphql-transport-ws, with the
  // graphql-ws client bundled in GraphiQL); the headers editor's content (the Authorization
  // header) is sent as the connection_init payload.
  var socketUrl = (window.location.protocol === "https:" ? "wss:" : "ws:") + "//" +
    window.location.host + "/graphql";
  var fetcher = GraphiQL.createFetcher({
    url: window.location.origin + "/graphql",
    subscriptionUrl: socketUrl
  });
  var notice = introspection ? [] : [
    "# Introspection is turned off on this gateway (graphql.introspection), so there is no",
    "# documentation or completion here; the schema is schema/schema.graphql.",
    ""
  ];
  var defaultQuery = notice.concat([
    "# Stock of two SKUs in every warehouse. Press the play button.",
    "query Stock {",
    "  stock(specNos: [\"G00001-01\", \"G00001-02\"]) {",
    "    specNo specName warehouseNo warehouseName onHand available locked modifiedAt",
    "  }",
    "}",
    ""
  ]).join("\n");
  var root = ReactDOM.createRoot(container);
  var props = {
    fetcher: fetcher,
    defaultQuery: defaultQuery,
    headers: headers,
    shouldPersistHeaders: false,
    defaultEditorToolsVisibility: headers ? "headers" : true
  };
  var children = [];
  if (!introspection) {
    // null: no schema, and no introspection query.
    props.schema = null;
    children.push(React.createElement(GraphiQL.Logo, { key: "logo" },
      "GraphiQL \u00b7 introspection off"));
  }
  root.render(React.createElement(GraphiQL, props, children));
})();
