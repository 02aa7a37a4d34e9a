import { readFileSync } from 'node:fs'

/** The package version, read once from package.json (two levels above dist/kernel). */
export const VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      name?: string
      version?: string
    }
    if (pkg.name === 'llm-mesh' && pkg.version) return pkg.version
  } catch {}
  return '0.0.0'
})()
