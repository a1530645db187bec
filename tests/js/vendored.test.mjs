// The playground's vendored libraries (playground/vendor/) are the files their pinned npm
// packages publish, byte for byte: a changed or hand-edited copy fails here.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const vendor = new URL('../../playground/vendor/', import.meta.url);

const pinned = [
  ['markdown-it.min.js', 'markdown-it', 'dist/browser/markdown-it.umd.min.js'],
  ['purify.min.js', 'dompurify', 'dist/purify.min.js'],
  ['highlight.min.js', '@highlightjs/cdn-assets', 'highlight.min.js'],
  ['highlight-github.min.css', '@highlightjs/cdn-assets', 'styles/github.min.css'],
  ['highlight-github-dark.min.css', '@highlightjs/cdn-assets', 'styles/github-dark.min.css'],
];

test('vendored_playground_libraries_are_the_pinned_npm_files', () => {
  const versions = JSON.parse(readFileSync(new URL('package.json', import.meta.url))).devDependencies;
  for (const [file, name, published] of pinned) {
    const root = new URL(`node_modules/${name}/`, import.meta.url);
    const installed = JSON.parse(readFileSync(new URL('package.json', root))).version;
    assert.equal(installed, versions[name], `${name} as pinned`);
    const readme = readFileSync(new URL('README.md', vendor), 'utf8');
    assert.ok(readme.includes(` ${installed} |`), `playground/vendor/README.md names ${name} ${installed}`);
    assert.ok(readFileSync(new URL(file, vendor)).equals(readFileSync(new URL(published, root))),
      `playground/vendor/${file} is ${name} ${installed}'s ${published}`);
  }
});
