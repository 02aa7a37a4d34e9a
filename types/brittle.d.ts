// Minimal typings for brittle 4 (the test runner).
declare module 'brittle' {
  export interface Test {
    plan(n: number): void
    pass(message?: string): void
    fail(message?: string): void
    ok(value: unknown, message?: string): void
    absent(value: unknown, message?: string): void
    is(actual: unknown, expected: unknown, message?: string): void
    not(actual: unknown, expected: unknown, message?: string): void
    alike(actual: unknown, expected: unknown, message?: string): void
    unlike(actual: unknown, expected: unknown, message?: string): void
    exception(
      fn: Promise<unknown> | (() => unknown),
      expected?: RegExp | Error,
      message?: string,
    ): Promise<void>
    execution(fn: Promise<unknown> | (() => unknown), message?: string): Promise<void>
    comment(...args: unknown[]): void
    teardown(fn: () => unknown, opts?: { order?: number }): void
    timeout(ms: number): void
    tmp(): Promise<string>
    test(name: string, fn: (t: Test) => unknown): Promise<void>
  }
  export interface TestOptions {
    timeout?: number
    skip?: boolean
    solo?: boolean
  }
  function test(name: string, fn: (t: Test) => unknown): void
  function test(name: string, opts: TestOptions, fn: (t: Test) => unknown): void
  namespace test {
    function skip(name: string, fn: (t: Test) => unknown): void
    function solo(name: string, fn: (t: Test) => unknown): void
  }
  export default test
}
