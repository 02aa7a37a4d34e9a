// Adds lock entries for node-llama-cpp's prebuilt-binary packages that the registry this project is
// built against lacks (404 for the mac/win/riscv builds), so `npm ci` sees a lock in sync with
// package.json. They are optional and for other platforms: npm marks them inert and never fetches
// them. Run after any `npm install` that rewrites the lock: node .ci/fix-lock.cjs package-lock.json
const fs = require('node:fs')
const file = process.argv[2]
const l = JSON.parse(fs.readFileSync(file, 'utf8'))
const v = l.packages['node_modules/node-llama-cpp'].version
const plat = {
  'linux-riscv64': ['linux', 'riscv64'],
  'mac-arm64-metal': ['darwin', 'arm64'],
  'mac-x64': ['darwin', 'x64'],
  'win-arm64': ['win32', 'arm64'],
  'win-x64': ['win32', 'x64'],
  'win-x64-cuda': ['win32', 'x64'],
  'win-x64-cuda-ext': ['win32', 'x64'],
  'win-x64-vulkan': ['win32', 'x64'],
}
for (const [n, [os, cpu]] of Object.entries(plat)) {
  const k = 'node_modules/@node-llama-cpp/' + n
  if (!l.packages[k])
    l.packages[k] = {
      version: v,
      cpu: [cpu],
      license: 'MIT',
      optional: true,
      os: [os],
      engines: { node: '>=20.0.0' },
    }
}
const sorted = {}
for (const k of Object.keys(l.packages).sort()) sorted[k] = l.packages[k]
sorted[''] = l.packages['']
l.packages = { '': l.packages[''], ...Object.fromEntries(Object.entries(sorted).filter(([k]) => k !== '')) }
fs.writeFileSync(file, JSON.stringify(l, null, 2) + '\n')
