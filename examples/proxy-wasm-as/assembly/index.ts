// A proxy-wasm filter written with the AssemblyScript SDK (ABI 0.2.0, allocator `malloc`,
// WASI as `wasi_unstable`). Its root context registers under the root id `add_header`, which the
// runtime matches against the host's `plugin_root_id` property.
// * Every request gets `x-assemblyscript: <plugin configuration>`.
// * Requests under /as-deny get a local 403 with body "denied by assemblyscript".
// * Every response gets `x-as-root: add_header`.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  stream_context,
  send_local_response,
  GrpcStatusValues,
  Headers,
} from "@solo-io/proxy-runtime";

class AddHeaderRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }
}

class AddHeader extends Context {
  constructor(context_id: u32, root_context: AddHeaderRoot) {
    super(context_id, root_context);
  }
  onRequestHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = stream_context.headers.request.get(":path");
    if (path.startsWith("/as-deny")) {
      send_local_response(403, "denied", String.UTF8.encode("denied by assemblyscript"), [], GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    stream_context.headers.request.add("x-assemblyscript", this.root_context.getConfiguration());
    return FilterHeadersStatusValues.Continue;
  }
  onResponseHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-root", "add_header");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => {
  return new AddHeaderRoot(context_id);
}, "add_header");
