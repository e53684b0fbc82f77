// Compiled by relay-compiler in .ci/run against schema/schema.graphql: proves that
// `stockChanges` is a Relay cursor connection (`@connection` accepts it: `first`/`after`,
// `edges { cursor node }`, `pageInfo`). Nothing runs this file.
import { graphql } from "react-relay";

export const stockChanges = graphql`
  query StockChangesQuery($from: DateTime!, $to: DateTime!, $warehouseNo: String, $first: Int, $after: String) {
    stockChanges(from: $from, to: $to, warehouseNo: $warehouseNo, first: $first, after: $after)
      @connection(key: "StockChangesQuery_stockChanges", filters: ["from", "to", "warehouseNo"]) {
      edges {
        cursor
        node { specNo warehouseNo onHand available locked modifiedAt }
      }
      pageInfo { startCursor endCursor hasNextPage hasPreviousPage }
    }
  }
`;
