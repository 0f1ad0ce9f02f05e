//! WebAssembly engines behind one interface. Nothing is implemented here yet.
