Console.WriteLine("lens");
