import { defineConfig } from 'vite';

// Vite's built-in transformer compiles TSX for Preact; no framework plugin is needed.
// Vite 8 transforms with Oxc (its `esbuild` option is deprecated), hence `oxc.jsx`.
export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Inlined assets would become data: URLs in scripts; keep every asset a file served
    // from 'self' so the strict Content-Security-Policy needs no exception.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: {
    // `npm run dev` against a local server (postern quickstart listens on 8080 by default).
    proxy: { '/api': { target: 'http://127.0.0.1:8080', ws: true } },
  },
});
